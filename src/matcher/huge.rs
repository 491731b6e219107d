//! Huge pages for the matcher's large arrays. At a million shapes the key table and the
//! candidates' lines span hundreds of MB; with 4 KiB pages nearly every lookup misses
//! the TLB as well as the caches, and the page walk (two-dimensional under a hypervisor)
//! costs more than the miss itself and holds back the prefetches meant to overlap the
//! misses. Buffers of at least 2 MiB are therefore allocated fresh and advised
//! (`madvise(MADV_HUGEPAGE)`) before their pages are first written, so that the kernel
//! can back them with 2 MiB pages where transparent huge pages are enabled for advised
//! memory. The advice is a hint: where it is refused or unsupported nothing changes.
//!
//! The kernel can only back a 2 MiB-aligned 2 MiB range of an advised mapping with a
//! huge page. A buffer of the global allocator's own alignment starts anywhere within a
//! page, so its first and last partial ranges stay on 4 KiB pages (the key table of a
//! million shapes, 64 MiB, had 31 of its 32 ranges backed). A fixed-length array is
//! therefore a [`HugeArray`], allocated 2 MiB-aligned, so that all of it can be.

use std::alloc::Layout;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

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

/// A fixed-length array whose buffer, when it is at least [`HUGE_PAGE`] bytes, starts on
/// a 2 MiB boundary and is advised before it is filled (see the module docs). Allocated
/// and freed through the global allocator.
pub(super) struct HugeArray<T: Copy> {
    ptr: NonNull<T>,
    len: usize,
}

// SAFETY: a `HugeArray` owns its elements like a `Vec` (no shared state, no interior
// mutability), so it may move to or be shared with another thread when they may.
unsafe impl<T: Copy + Send> Send for HugeArray<T> {}
// SAFETY: as above; `&HugeArray` only hands out `&[T]`.
unsafe impl<T: Copy + Sync> Sync for HugeArray<T> {}

impl<T: Copy> HugeArray<T> {
    /// `len` copies of `value`.
    pub(super) fn filled(len: usize, value: T) -> HugeArray<T> {
        let layout = HugeArray::<T>::layout(len);
        if layout.size() == 0 {
            return HugeArray::default();
        }
        // SAFETY: the layout's size is not zero (checked above).
        let raw = unsafe { std::alloc::alloc(layout) }.cast::<T>();
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout);
        };
        if layout.size() >= HUGE_PAGE {
            advise_range(raw as usize, layout.size());
        }
        for i in 0..len {
            // SAFETY: `i < len`, so the element lies inside the allocation (sized for
            // `len` elements of `T` and aligned for `T`); writing a `Copy` value into
            // uninitialized memory needs no drop of what was there.
            unsafe { ptr.as_ptr().add(i).write(value) };
        }
        HugeArray { ptr, len }
    }

    /// The layout of `len` elements: 2 MiB-aligned from [`HUGE_PAGE`] bytes on.
    fn layout(len: usize) -> Layout {
        let array = Layout::array::<T>(len).expect("array size overflows");
        if array.size() >= HUGE_PAGE {
            array
                .align_to(HUGE_PAGE)
                .expect("2 MiB is a valid alignment")
        } else {
            array
        }
    }
}

impl<T: Copy> Default for HugeArray<T> {
    fn default() -> HugeArray<T> {
        HugeArray {
            ptr: NonNull::dangling(),
            len: 0,
        }
    }
}

impl<T: Copy> Deref for HugeArray<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` points to `len` initialized elements (all written in `filled`)
        // owned by `self`, or is dangling and aligned with `len` 0.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> DerefMut for HugeArray<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> Drop for HugeArray<T> {
    fn drop(&mut self) {
        let layout = HugeArray::<T>::layout(self.len);
        if layout.size() > 0 {
            // SAFETY: `ptr` was allocated in `filled` with this same layout (the length
            // never changes) and is freed only here. The elements are `Copy`: nothing
            // to drop.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr().cast(), layout) };
        }
    }
}

impl<T: Copy + std::fmt::Debug> std::fmt::Debug for HugeArray<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
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
    }

    /// Small arrays keep their type's alignment; from 2 MiB on they start on a 2 MiB
    /// boundary. Every element is written and readable, and arrays are freed (with the
    /// layout they were allocated with) when replaced or dropped.
    #[test]
    fn arrays_are_filled_and_aligned_from_a_huge_page_on() {
        let empty = HugeArray::filled(0, 1u64);
        assert!(empty.is_empty());
        let small = HugeArray::filled(1_000, [3u64; 4]);
        assert_eq!(small.len(), 1_000);
        assert!(small.iter().all(|x| *x == [3; 4]));
        let mut array = HugeArray::<u64>::default();
        for len in [1 << 18, 1 << 19, 1 << 20, 3 << 19] {
            let mut next = HugeArray::filled(len, len as u64);
            assert_eq!(next.as_ptr() as usize % HUGE_PAGE, 0, "{len} elements");
            assert!(next.iter().all(|&x| x == len as u64));
            next[len - 1] = 1;
            next[..array.len()].copy_from_slice(&array);
            array = next;
            assert_eq!((array.len(), array[len - 1]), (len, 1));
        }
        assert_eq!(array[0], 1 << 18);
        let unaligned = HugeArray::filled(HUGE_PAGE / 24 + 1, [5u8; 24]);
        assert_eq!(unaligned.as_ptr() as usize % HUGE_PAGE, 0);
        assert_eq!(format!("{:?}", HugeArray::filled(2, 1u8)), "[1, 1]");
    }
}
