//! # hakmem-preload
//!
//! hakmem as the `malloc` of any dynamically linked program:
//!
//! ```sh
//! cargo xtask preload --mode fast          # prints …/target/preload/fast/libhakmem_preload.so
//! LD_PRELOAD=…/libhakmem_preload.so python3 script.py
//! ```
//!
//! This `cdylib` exports the C allocation functions with glibc 2.36's semantics — `malloc`,
//! `free`, `calloc`, `realloc`, `reallocarray`, `posix_memalign`, `aligned_alloc`, `memalign`,
//! `valloc`, `pvalloc`, `malloc_usable_size` — plus `hakmem_mode()`, and routes them to one
//! static [`hakmem::Hakmem`], whose mode is this crate's cargo feature exactly as for `hakmem`
//! (`balanced` by default; `runtime` reads `HAKMEM_MODE`). docs/preload.md says how to use it,
//! what each export does at its edges, and the limits.
//!
//! Rules these functions keep: they never allocate through anything but hakmem (whose system
//! path calls glibc's `__libc_*` entry points in this build: cargo feature `hakmem/preload`),
//! never panic (every size computation is checked; nothing is indexed or unwrapped), and keep
//! glibc's `errno` contract: a failed allocation leaves `ENOMEM` (`EINVAL` for a bad alignment,
//! except in `posix_memalign`, which returns it), and nothing else changes `errno` — `free`
//! keeps it (POSIX.1-2024). hakmem itself never changes `errno` except to report a failed
//! allocation, so no entry point saves or restores it. They write nothing to stderr unless
//! asked (`HAKMEM_LOG`, `HAKMEM_REPORT=1`; docs/preload.md), misuse aborts aside.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn, missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
compile_error!(
    "hakmem-preload replaces glibc's malloc and calls glibc's __libc_* functions: \
     it builds for linux-gnu targets only"
);

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::{c_char, c_int, c_void, CStr};
use core::ptr;

use hakmem::{Hakmem, Mode, Policy, Site};

/// The allocator behind every export.
static HAKMEM: Hakmem = Hakmem::new();

/// What `malloc` aligns to: `alignof(max_align_t)` on x86_64 and aarch64 glibc.
const MALLOC_ALIGN: usize = 16;

/// The sizes `malloc` hands straight to hakmem, without `Layout`'s overflow check (which no size
/// this small can fail): the most common requests of C programs, and in the pool's modes those
/// whose class is one table load. The compiler, knowing the bound, also drops the large and
/// pool-limit branches from that path.
const SMALL: usize = 1024;

// ---- glibc's malloc, set up while the process is single-threaded ------------------------------

extern "C" {
    fn __libc_malloc(size: usize) -> *mut c_void;
    fn __libc_free(ptr: *mut c_void);
}

/// The library's constructor: sets up glibc's malloc, and registers the report at exit where
/// `HAKMEM_REPORT=1` asks for it ([`Hakmem::report_at_exit`]).
///
/// glibc's malloc serves hakmem's system path in this library (`__libc_malloc` & co.); it is set
/// up here, at load time. glibc 2.36 sets itself up lazily, at its first call, for the calling
/// thread, which it takes to be the only one: it makes that thread the main arena's one user.
/// Here that first call can come late and from two threads at once (with the pool serving every
/// small request, the first system-path allocations may be two exiting threads' key
/// destructors'); both would then use the main arena as its only user, and the second to exit
/// would fail glibc's `a->attached_threads > 0` assertion. A constructor runs before `main`,
/// while the process is single-threaded.
extern "C" fn init() {
    // SAFETY: glibc's own malloc and free, on a block of its own.
    unsafe { __libc_free(__libc_malloc(1)) }
    HAKMEM.report_at_exit();
}

/// The library's one constructor ([`init`]).
#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;

// ---- errno -----------------------------------------------------------------------------------

fn set_errno(value: c_int) {
    // SAFETY: __errno_location returns this thread's errno slot, valid for the thread's life.
    unsafe { *libc::__errno_location() = value }
}

/// Null with `errno = ENOMEM`: an allocation refused before it reaches hakmem (a size that
/// overflows); hakmem sets `ENOMEM` itself when it fails.
///
/// Out of line, so that the exports' own code (their fast paths) never calls
/// `__errno_location` (`cargo xtask preload --check` looks).
#[cold]
#[inline(never)]
fn enomem() -> *mut c_void {
    set_errno(libc::ENOMEM);
    ptr::null_mut()
}

// ---- the allocation core ---------------------------------------------------------------------

/// A block of `size` bytes aligned to `align` (a power of two), or null with `ENOMEM`.
/// `size == 0` gives a unique block.
#[inline(always)]
fn allocate(size: usize, align: usize, zeroed: bool) -> *mut c_void {
    let Ok(layout) = Layout::from_size_align(size, align) else {
        return enomem(); // the size, rounded up to the alignment, exceeds isize::MAX
    };
    // SAFETY: `layout` is valid; `alloc_at` accepts zero sizes, and `alloc_zeroed` is only
    // called with a non-zero one (a zero-sized block has nothing to zero). Null comes with
    // `errno = ENOMEM` already.
    let p = unsafe {
        if zeroed && size != 0 {
            HAKMEM.alloc_zeroed(layout)
        } else {
            HAKMEM.alloc_at(layout, Site::NONE)
        }
    };
    p.cast()
}

/// glibc 2.36's `memalign` (also its `aligned_alloc`, `valloc`, `pvalloc`): an alignment up to
/// 16 is plain `malloc`; one above `SIZE_MAX / 2 + 1` is `EINVAL`; any other that is not a power
/// of two is rounded up to the next one.
#[inline]
fn memalign_glibc(align: usize, size: usize) -> *mut c_void {
    if align <= MALLOC_ALIGN {
        return allocate(size, MALLOC_ALIGN, false);
    }
    if align > usize::MAX / 2 + 1 {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    // Cannot overflow: `align <= 2^(bits-1)`.
    allocate(size, align.next_power_of_two(), false)
}

/// The page size (`sysconf`; never allocates).
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let raw = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    match usize::try_from(raw) {
        Ok(size) if size.is_power_of_two() => size,
        _ => 4096,
    }
}

// ---- the exports -----------------------------------------------------------------------------

/// `malloc(size)`: a block of `size` bytes aligned to 16; `malloc(0)` is a unique pointer.
/// Null and `ENOMEM` on failure.
///
/// # Safety
/// The C contract (none beyond it).
#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    if size <= SMALL {
        // SAFETY: a size this small, aligned to 16, is a valid layout; null comes with
        // `errno = ENOMEM` already.
        return unsafe {
            HAKMEM.alloc_at(
                Layout::from_size_align_unchecked(size, MALLOC_ALIGN),
                Site::NONE,
            )
        }
        .cast();
    }
    allocate(size, MALLOC_ALIGN, false)
}

/// `free(ptr)`: a no-op for null; `errno` is left as it was.
///
/// # Safety
/// `ptr` is null or a live block from this library's allocation functions. A double free or a
/// foreign pointer that the block header reveals ends the process with a one-line message.
#[no_mangle]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    // SAFETY: forwarded from the caller (`free` is a no-op for null and keeps `errno`).
    unsafe { HAKMEM.free(ptr.cast()) };
}

/// `calloc(n, size)`: `n * size` zeroed bytes; null and `ENOMEM` if the product overflows or
/// memory cannot be had; a unique pointer if it is 0.
///
/// # Safety
/// The C contract (none beyond it).
#[no_mangle]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        Some(total) => allocate(total, MALLOC_ALIGN, true),
        None => enomem(),
    }
}

/// `realloc(ptr, size)` as glibc does it: `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)`
/// frees `p` and returns null (not a failure: `errno` is untouched); otherwise the contents up
/// to the smaller size are kept, and on failure null is returned with `ENOMEM` and `p` stays
/// valid.
///
/// # Safety
/// `ptr` is null or a live block from this library's allocation functions.
#[no_mangle]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    if ptr.is_null() {
        return allocate(size, MALLOC_ALIGN, false);
    }
    if size == 0 {
        // SAFETY: forwarded from the caller.
        unsafe { free(ptr) };
        return ptr::null_mut();
    }
    // SAFETY: forwarded from the caller. Null comes with `errno = ENOMEM`, `ptr` intact.
    unsafe { HAKMEM.realloc_ptr(ptr.cast(), size) }.cast()
}

/// `reallocarray(ptr, n, size)`: `realloc(ptr, n * size)`, except that an overflowing product
/// returns null with `ENOMEM` and leaves `ptr` alone.
///
/// # Safety
/// As [`realloc`].
#[no_mangle]
pub unsafe extern "C" fn reallocarray(ptr: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: forwarded from the caller.
        Some(total) => unsafe { realloc(ptr, total) },
        None => enomem(),
    }
}

/// `posix_memalign(out, align, size)`: 0 and `*out` set; `EINVAL` if `align` is not a power of
/// two multiple of `sizeof(void *)` (`errno` left as it was); `ENOMEM` if memory cannot be had,
/// with `errno = ENOMEM` too, as glibc does. On failure `*out` is not written.
///
/// # Safety
/// `out` is valid for a pointer-sized write.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !align.is_power_of_two() || align % core::mem::size_of::<*mut c_void>() != 0 {
        return libc::EINVAL;
    }
    let p = allocate(size, align, false);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller guarantees `out` is writable.
    unsafe { out.write(p) };
    0
}

/// `aligned_alloc(align, size)`: glibc 2.36's is its `memalign` (no check that `size` is a
/// multiple of `align`; an alignment that is not a power of two is rounded up), and so is this.
///
/// # Safety
/// The C contract (none beyond it).
#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    memalign_glibc(align, size)
}

/// `memalign(align, size)`: an alignment up to 16 is `malloc`; above `SIZE_MAX / 2 + 1`,
/// null with `EINVAL`; otherwise rounded up to a power of two. Null and `ENOMEM` on failure.
///
/// # Safety
/// The C contract (none beyond it).
#[no_mangle]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    memalign_glibc(align, size)
}

/// `valloc(size)`: `memalign(page size, size)`.
///
/// # Safety
/// The C contract (none beyond it).
#[no_mangle]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    memalign_glibc(page_size(), size)
}

/// `pvalloc(size)`: `size` rounded up to whole pages (at least one), page-aligned; null and
/// `ENOMEM` if the rounding overflows.
///
/// # Safety
/// The C contract (none beyond it).
#[no_mangle]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let page = page_size();
    match size.checked_add(page - 1) {
        Some(n) => memalign_glibc(page, (n & !(page - 1)).max(page)),
        None => enomem(),
    }
}

/// `malloc_usable_size(ptr)`: the bytes usable from `ptr` on (at least what was asked for);
/// 0 for null.
///
/// # Safety
/// `ptr` is null or a live block from this library's allocation functions.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(ptr: *mut c_void) -> usize {
    // SAFETY: forwarded from the caller.
    unsafe { HAKMEM.usable_size(ptr.cast_const().cast()) }
}

/// `const char *hakmem_mode(void)`: the mode in effect, as a static string (`"balanced"`, …):
/// the compiled mode, or for the `runtime` build the one `HAKMEM_MODE` chose. For programs and
/// tests that want to know which hakmem they run on (`dlsym(RTLD_DEFAULT, "hakmem_mode")`).
///
/// # Safety
/// None: the string is static and must not be freed.
#[no_mangle]
pub unsafe extern "C" fn hakmem_mode() -> *const c_char {
    let name: &'static CStr = match <hakmem::Selected as Policy>::config().mode {
        Mode::Minimal => c"minimal",
        Mode::Fast => c"fast",
        Mode::Balanced => c"balanced",
        Mode::Learning => c"learning",
        Mode::Research => c"research",
    };
    name.as_ptr()
}
