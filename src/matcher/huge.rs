//! Huge pages for the matcher's large arrays. At a million shapes the key table and the
//! candidates' lines span hundreds of MB; with 4 KiB pages nearly every lookup misses
//! the TLB as well as the caches, and the page walk (two-dimensional under a hypervisor)
//! costs more than the miss itself and holds back the prefetches meant to overlap the
//! misses. Buffers of at least 2 MiB are therefore allocated fresh and advised
//! (`madvise(MADV_HUGEPAGE)`) before their pages are first written, so that the kernel
//! can back them with 2 MiB pages where transparent huge pages are enabled for advised
//! memory. The advice is a hint: where it is refused or unsupported nothing changes.

/// Smallest buffer worth advising: one huge page.
const HUGE_PAGE: usize = 2 << 20;

/// Makes room for one more element of `v` as `Vec::push` would (doubling), but a buffer
/// of at least [`HUGE_PAGE`] bytes is a fresh allocation advised before the elements
/// are moved into it (so its pages are first written after the advice).
pub(super) fn reserve_one<T>(v: &mut Vec<T>) {
    if v.len() < v.capacity() {
        return;
    }
    let capacity = (v.capacity() * 2).max(4);
    if capacity * std::mem::size_of::<T>() < HUGE_PAGE {
        v.reserve_exact(capacity - v.len());
        return;
    }
    let mut fresh = Vec::with_capacity(capacity);
    advise(&fresh);
    fresh.append(v);
    *v = fresh;
}

/// A vector of `len` copies of `value`, its buffer advised before it is filled.
pub(super) fn filled<T: Clone>(len: usize, value: T) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    advise(&v);
    v.resize(len, value);
    v
}

/// Advises the whole-page part of `v`'s buffer (its capacity) for huge pages, when it is
/// at least [`HUGE_PAGE`] bytes.
fn advise<T>(v: &Vec<T>) {
    let bytes = v.capacity() * std::mem::size_of::<T>();
    if bytes >= HUGE_PAGE {
        advise_range(v.as_ptr() as usize, bytes);
    }
}

#[cfg(target_os = "linux")]
fn advise_range(start: usize, bytes: usize) {
    const PAGE: usize = 4096;
    let first = start.next_multiple_of(PAGE);
    let end = (start + bytes) & !(PAGE - 1);
    if end > first {
        // SAFETY: MADV_HUGEPAGE changes neither the contents nor the accessibility of
        // any memory, only how the kernel may back it; the range lies inside one live
        // allocation (rounded inward to whole pages). A failure (THP not available,
        // another page size) leaves everything as it was, so the result is ignored.
        unsafe {
            libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_range(_start: usize, _bytes: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_keeps_elements_and_doubles() {
        let mut v: Vec<u64> = Vec::new();
        for i in 0..600_000u64 {
            reserve_one(&mut v);
            let capacity = v.capacity();
            v.push(i);
            assert_eq!(v.capacity(), capacity);
        }
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
        assert!(v.capacity() < 2 * 600_000 + 4);
        let f = filled(300_000, 7u32);
        assert_eq!((f.len(), f.iter().all(|&x| x == 7)), (300_000, true));
    }
}
