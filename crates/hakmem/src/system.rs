//! The system allocator (glibc's `malloc` family): the small-object path of the modes without a
//! pool, and the backing of every block below the mmap threshold that the pool does not serve.
//!
//! Kept behind this module so that a build which *is* `malloc` (the preload library) can point
//! it at glibc's own entry points instead of the exported symbols.

/// The alignment `malloc` guarantees on this target.
pub(crate) const MALLOC_ALIGN: usize = 16;

/// `malloc(size)` or, with `zeroed`, `calloc(1, size)`. Null on failure.
///
/// # Safety
/// None beyond the C contract; the result is owned by the caller.
#[inline]
pub(crate) unsafe fn alloc(size: usize, zeroed: bool) -> *mut u8 {
    // SAFETY: plain C allocation calls; failure is reported as null.
    unsafe {
        if zeroed {
            libc::calloc(1, size).cast()
        } else {
            libc::malloc(size).cast()
        }
    }
}

/// `posix_memalign(align, size)`. Null on failure.
///
/// # Safety
/// `align` must be a power of two and a multiple of `size_of::<*mut u8>()`.
#[inline]
pub(crate) unsafe fn alloc_aligned(align: usize, size: usize) -> *mut u8 {
    debug_assert!(align.is_power_of_two() && align >= core::mem::size_of::<usize>());
    let mut out = core::ptr::null_mut();
    // SAFETY: `out` is a valid out-pointer and the alignment is valid (checked above).
    let rc = unsafe { libc::posix_memalign(&mut out, align, size) };
    if rc == 0 {
        out.cast()
    } else {
        core::ptr::null_mut()
    }
}

/// `realloc(ptr, size)`: keeps the contents, keeps `MALLOC_ALIGN` alignment. Null (with `ptr`
/// still valid) on failure.
///
/// # Safety
/// `ptr` must come from [`alloc`] or [`realloc`] and not be freed.
#[inline]
pub(crate) unsafe fn realloc(ptr: *mut u8, size: usize) -> *mut u8 {
    // SAFETY: the caller guarantees `ptr` is a live malloc block.
    unsafe { libc::realloc(ptr.cast(), size).cast() }
}

/// `malloc_usable_size(ptr)`: the bytes the block really holds (at least what was asked).
///
/// # Safety
/// `ptr` must come from this module's allocation functions and not be freed.
#[inline]
pub(crate) unsafe fn usable_size(ptr: *mut u8) -> usize {
    // SAFETY: the caller guarantees `ptr` is a live malloc block.
    unsafe { libc::malloc_usable_size(ptr.cast()) }
}

/// `free(ptr)`.
///
/// # Safety
/// `ptr` must come from this module's allocation functions and not be freed.
#[inline]
pub(crate) unsafe fn free(ptr: *mut u8) {
    // SAFETY: the caller guarantees `ptr` is a live malloc block.
    unsafe { libc::free(ptr.cast()) }
}
