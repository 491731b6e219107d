//! A cache-line prefetch hint: starts loading the line that holds a value without
//! waiting for it, so that independent misses of one change overlap instead of coming
//! one after another. A no-op where no hint is available.

/// Starts loading the cache line holding `*value` into every cache level.
#[inline(always)]
pub(super) fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` only hints the cache; it never faults or reads data into
    // the program, and SSE (which provides it) is part of the x86-64 baseline. The
    // pointer comes from a live reference in any case.
    unsafe {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
