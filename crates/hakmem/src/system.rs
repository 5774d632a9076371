//! The system allocator (glibc's `malloc` family): the small-object path of the modes without a
//! pool, and the backing of every block below the mmap threshold that the pool does not serve.
//!
//! Kept behind this module so that a build which *is* `malloc` (the preload library, cargo
//! feature `preload`) can point it at glibc's own entry points instead of the exported symbols:
//! there, `malloc` resolves to hakmem itself, and calling it from the system path would recurse.
//! glibc exports `__libc_malloc`, `__libc_calloc`, `__libc_realloc`, `__libc_free` and
//! `__libc_memalign` (version GLIBC_2.2.5, still in 2.36) for exactly this; they are the same
//! functions as glibc's `malloc` & co. Every other build calls `malloc` & co., so that whatever
//! allocator the process has (an `LD_PRELOAD`ed one, a sanitizer's, valgrind's) serves the
//! system path and sees every block.

/// The alignment `malloc` guarantees on this target.
pub(crate) const MALLOC_ALIGN: usize = 16;

#[cfg(all(feature = "preload", target_os = "linux", target_env = "gnu"))]
mod entry {
    use core::ffi::c_void;

    extern "C" {
        fn __libc_malloc(size: usize) -> *mut c_void;
        fn __libc_calloc(n: usize, size: usize) -> *mut c_void;
        fn __libc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
        fn __libc_free(ptr: *mut c_void);
        fn __libc_memalign(align: usize, size: usize) -> *mut c_void;
    }

    /// `malloc`: glibc's, never the interposed one.
    ///
    /// # Safety
    /// The C contract.
    #[inline(always)]
    pub(super) unsafe fn malloc(size: usize) -> *mut c_void {
        // SAFETY: forwarded from the caller.
        unsafe { __libc_malloc(size) }
    }

    /// `calloc`: glibc's.
    ///
    /// # Safety
    /// The C contract.
    #[inline(always)]
    pub(super) unsafe fn calloc(n: usize, size: usize) -> *mut c_void {
        // SAFETY: forwarded from the caller.
        unsafe { __libc_calloc(n, size) }
    }

    /// `realloc`: glibc's.
    ///
    /// # Safety
    /// `ptr` is a live block of glibc's.
    #[inline(always)]
    pub(super) unsafe fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
        // SAFETY: forwarded from the caller.
        unsafe { __libc_realloc(ptr, size) }
    }

    /// `free`: glibc's.
    ///
    /// # Safety
    /// `ptr` is a live block of glibc's.
    #[inline(always)]
    pub(super) unsafe fn free(ptr: *mut c_void) {
        // SAFETY: forwarded from the caller.
        unsafe { __libc_free(ptr) }
    }

    /// An `align`-aligned block of glibc's, or null (`__libc_memalign` has no out-parameter).
    ///
    /// # Safety
    /// `align` is a power of two.
    #[inline(always)]
    pub(super) unsafe fn memalign(align: usize, size: usize) -> *mut c_void {
        // SAFETY: forwarded from the caller; glibc's memalign accepts any power of two.
        unsafe { __libc_memalign(align, size) }
    }
}

#[cfg(not(all(feature = "preload", target_os = "linux", target_env = "gnu")))]
mod entry {
    use core::ffi::c_void;

    pub(super) use libc::{calloc, free, malloc, realloc};

    /// An `align`-aligned block from `posix_memalign`, or null.
    ///
    /// # Safety
    /// `align` is a power of two and a multiple of `size_of::<*mut u8>()`.
    #[inline(always)]
    pub(super) unsafe fn memalign(align: usize, size: usize) -> *mut c_void {
        let mut out = core::ptr::null_mut();
        // SAFETY: `out` is a valid out-pointer and the alignment is valid (caller).
        let rc = unsafe { libc::posix_memalign(&mut out, align, size) };
        if rc == 0 {
            out
        } else {
            core::ptr::null_mut()
        }
    }
}

/// `malloc(size)` or, with `zeroed`, `calloc(1, size)`. Null on failure.
///
/// # Safety
/// None beyond the C contract; the result is owned by the caller.
#[inline]
pub(crate) unsafe fn alloc(size: usize, zeroed: bool) -> *mut u8 {
    // SAFETY: plain C allocation calls; failure is reported as null.
    unsafe {
        if zeroed {
            entry::calloc(1, size).cast()
        } else {
            entry::malloc(size).cast()
        }
    }
}

/// An `align`-aligned block of `size` bytes (`posix_memalign`, or glibc's `memalign` in the
/// preload build). Null on failure.
///
/// # Safety
/// `align` must be a power of two and a multiple of `size_of::<*mut u8>()`.
#[inline]
pub(crate) unsafe fn alloc_aligned(align: usize, size: usize) -> *mut u8 {
    debug_assert!(align.is_power_of_two() && align >= core::mem::size_of::<usize>());
    // SAFETY: the alignment is valid (caller).
    unsafe { entry::memalign(align, size).cast() }
}

/// `realloc(ptr, size)`: keeps the contents, keeps `MALLOC_ALIGN` alignment. Null (with `ptr`
/// still valid) on failure.
///
/// # Safety
/// `ptr` must come from [`alloc`] or [`realloc`] and not be freed.
#[inline]
pub(crate) unsafe fn realloc(ptr: *mut u8, size: usize) -> *mut u8 {
    // SAFETY: the caller guarantees `ptr` is a live malloc block.
    unsafe { entry::realloc(ptr.cast(), size).cast() }
}

/// `malloc_usable_size(ptr)`: the bytes the block really holds (at least what was asked), or
/// `None` in the preload build, where `malloc_usable_size` is hakmem's own export and glibc has
/// no `__libc_` twin of it (the corrupted-length check then has no upper bound; docs/preload.md).
///
/// # Safety
/// `ptr` must come from this module's allocation functions and not be freed.
#[inline]
pub(crate) unsafe fn usable_size(ptr: *mut u8) -> Option<usize> {
    #[cfg(not(all(feature = "preload", target_os = "linux", target_env = "gnu")))]
    // SAFETY: the caller guarantees `ptr` is a live malloc block.
    return Some(unsafe { libc::malloc_usable_size(ptr.cast()) });
    #[cfg(all(feature = "preload", target_os = "linux", target_env = "gnu"))]
    {
        let _ = ptr;
        None
    }
}

/// `free(ptr)`.
///
/// # Safety
/// `ptr` must come from this module's allocation functions and not be freed.
#[inline]
pub(crate) unsafe fn free(ptr: *mut u8) {
    // SAFETY: the caller guarantees `ptr` is a live malloc block.
    unsafe { entry::free(ptr.cast()) }
}
