//! Every system call hakmem makes: mappings (`mmap`, `munmap`, `mremap`, `madvise`), the page
//! size, the environment, stderr and abort. Each wrapper states the invariant it needs; failures
//! come back as `None`/`false`, never as a panic.
//!
//! **errno.** No wrapper here changes `errno`: each one that can fail puts back the value it
//! found ([`keep_errno`]). A refused `madvise` inside a successful `malloc`, or a refused
//! `munmap` inside `free`, is hakmem's business, not the program's; glibc's contract is that
//! `free` keeps `errno` and that a failed allocation leaves `ENOMEM`, which the allocator sets
//! in one place ([`set_errno`], called by `allocator`'s `out_of_memory`).

use core::ffi::CStr;
use core::ptr::{self, NonNull};

/// The system page size: 4 KiB on x86_64 Linux (a constant, so the large path folds it).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) const fn page_size() -> usize {
    4096
}

/// The system page size (a power of two), read once with `sysconf`.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
pub(crate) fn page_size() -> usize {
    static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);
    match PAGE_SIZE.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: sysconf has no preconditions.
            let raw = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            let size = if raw > 0 && (raw as usize).is_power_of_two() {
                raw as usize
            } else {
                4096
            };
            PAGE_SIZE.store(size, Ordering::Relaxed);
            size
        }
        size => size,
    }
}

/// Maps `len` bytes of fresh, zeroed, private anonymous read-write memory.
///
/// `len` must be a non-zero multiple of the page size. Returns `None` when the kernel refuses
/// (out of memory, address space or `RLIMIT_AS`).
pub(crate) fn map(len: usize) -> Option<NonNull<u8>> {
    debug_assert!(
        len > 0 && len % page_size() == 0,
        "map({len}): not whole pages"
    );
    anonymous(len, libc::PROT_READ | libc::PROT_WRITE, 0)
}

/// A fresh private anonymous mapping of `len` bytes with protection `prot` and extra `flags`,
/// at an address the kernel chooses; `None` if it refuses.
#[inline(always)]
fn anonymous(len: usize, prot: libc::c_int, flags: libc::c_int) -> Option<NonNull<u8>> {
    // SAFETY: an anonymous private mapping at a kernel-chosen address touches no existing
    // memory; the result is checked against MAP_FAILED before use.
    let p = keep_errno(|| unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
            -1,
            0,
        )
    });
    if p == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(p.cast())
    }
}

/// Reserves `len` bytes of address space: mapped `PROT_NONE` and `MAP_NORESERVE`, so it costs
/// neither memory nor commit charge until parts of it are made accessible with [`commit`].
///
/// `len` must be a non-zero multiple of the page size. Returns `None` when the kernel refuses
/// (address space or `RLIMIT_AS`).
pub(crate) fn reserve(len: usize) -> Option<NonNull<u8>> {
    debug_assert!(len > 0 && len % page_size() == 0);
    anonymous(len, libc::PROT_NONE, libc::MAP_NORESERVE)
}

/// Reserves `len` bytes of address space as a read-write mapping that is `MAP_NORESERVE`: no
/// commit charge (outside strict overcommit) and no memory until touched. For a range that a
/// fixed-address [`remap_to`] will fill: tools that track mappings (valgrind's memcheck) keep the
/// grown part of such a move as accessible as what it replaced, and a `PROT_NONE` reservation
/// would leave it inaccessible to them.
///
/// `len` must be a non-zero multiple of the page size. Returns `None` when the kernel refuses.
pub(crate) fn reserve_writable(len: usize) -> Option<NonNull<u8>> {
    debug_assert!(len > 0 && len % page_size() == 0);
    anonymous(len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_NORESERVE)
}

/// Makes `[ptr, ptr + len)` of a [`reserve`]d range readable and writable (the kernel charges
/// it then; its pages are still only backed when touched). Returns whether the kernel agreed;
/// making an already accessible range accessible again is harmless.
///
/// # Safety
/// The range must be whole pages of a reservation of ours.
pub(crate) unsafe fn commit(ptr: NonNull<u8>, len: usize) -> bool {
    debug_assert!(ptr.as_ptr() as usize % page_size() == 0 && len % page_size() == 0);
    // SAFETY: the caller guarantees the range is ours; raising its protection to read-write
    // changes no byte of it.
    keep_errno(|| unsafe {
        libc::mprotect(ptr.as_ptr().cast(), len, libc::PROT_READ | libc::PROT_WRITE) == 0
    })
}

/// What [`unmap`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub(crate) enum Unmapped {
    /// The range is gone.
    Done,
    /// The kernel refused for lack of memory (`ENOMEM`): unmapping the middle of a mapping
    /// splits it, and at the process's map-count limit (`vm.max_map_count`) it cannot. The range
    /// stays mapped, its pages released with `MADV_DONTNEED` (which splits nothing): the memory
    /// goes back to the OS, a little address space stays behind. glibc, mimalloc and jemalloc
    /// also leave such a block mapped; a `free` must not fail for it.
    Kept,
    /// The kernel refused the range itself (`EINVAL`: not page-aligned, or empty): only a
    /// corrupted length or address makes one, which the caller may report.
    Invalid,
}

/// Unmaps `[ptr, ptr + len)`, or where the kernel cannot, releases its pages ([`Unmapped`]).
/// This is the one place that handles a refused `munmap`: every release of memory to the OS
/// goes through it.
///
/// # Safety
/// The range must be whole pages of a mapping made by [`map`], [`remap`] or [`reserve`] that
/// nothing refers to any more.
pub(crate) unsafe fn unmap(ptr: NonNull<u8>, len: usize) -> Unmapped {
    // SAFETY: the caller guarantees the range is an unused mapping of ours.
    keep_errno(|| unsafe {
        if libc::munmap(ptr.as_ptr().cast(), len) == 0 {
            return Unmapped::Done;
        }
        if last_errno() != libc::ENOMEM {
            return Unmapped::Invalid;
        }
        // Its contents are no longer needed (caller), so dropping the pages is fine; a refused
        // advice (a range of a reservation never made accessible has no pages) changes nothing.
        libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_DONTNEED);
        Unmapped::Kept
    })
}

/// Advice for [`advise`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Advice {
    /// `MADV_HUGEPAGE`: back the range with transparent huge pages where the kernel allows.
    HugePage,
    /// `MADV_FREE`: the kernel may reclaim the pages lazily; they read as zero if it did.
    Free,
    /// `MADV_DONTNEED`: the pages are dropped at once (the resident set shrinks now); they read
    /// as zero when next touched.
    DontNeed,
}

/// Gives the kernel advice about `[ptr, ptr + len)`. Returns whether the kernel accepted it
/// (THP advice is refused where THP is disabled, which is fine).
///
/// # Safety
/// The range must be whole pages of a mapping of ours. With `Free` or `DontNeed` the caller must
/// not need the contents any more.
pub(crate) unsafe fn advise(ptr: NonNull<u8>, len: usize, advice: Advice) -> bool {
    debug_assert!(ptr.as_ptr() as usize % page_size() == 0);
    let advice = match advice {
        Advice::HugePage => libc::MADV_HUGEPAGE,
        Advice::Free => libc::MADV_FREE,
        Advice::DontNeed => libc::MADV_DONTNEED,
    };
    // SAFETY: the caller guarantees the range is a mapping of ours whose contents may go.
    keep_errno(|| unsafe { libc::madvise(ptr.as_ptr().cast(), len, advice) == 0 })
}

/// Resizes the mapping `[ptr, ptr + old_len)` to `new_len` bytes, moving it if it must. The
/// contents up to `min(old_len, new_len)` are kept (pages are moved, not copied); new pages are
/// zero. Returns the new address, or `None` (and the old mapping intact) on failure.
///
/// # Safety
/// The range must be a whole mapping of ours; if it moves, nothing may use the old address.
pub(crate) unsafe fn remap(
    ptr: NonNull<u8>,
    old_len: usize,
    new_len: usize,
) -> Option<NonNull<u8>> {
    debug_assert!(old_len % page_size() == 0 && new_len % page_size() == 0 && new_len > 0);
    // SAFETY: the caller guarantees the range is a mapping of ours that may move.
    let p = keep_errno(|| unsafe {
        libc::mremap(ptr.as_ptr().cast(), old_len, new_len, libc::MREMAP_MAYMOVE)
    });
    if p == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(p.cast())
    }
}

/// Moves the mapping `[ptr, ptr + old_len)` to exactly `to`, resized to `new_len` bytes
/// (`MREMAP_FIXED`): whatever was mapped at `[to, to + new_len)` is unmapped first. Pages move,
/// they are not copied; new pages are zero. Returns whether it moved. On failure the old mapping
/// is intact, but the target range may already have been unmapped (the kernel unmaps it before
/// it moves the pages).
///
/// # Safety
/// `[ptr, ptr + old_len)` is a whole mapping of ours that nothing will use at its old address;
/// `[to, to + new_len)` is page-aligned, does not overlap it, and is ours to discard.
pub(crate) unsafe fn remap_to(
    ptr: NonNull<u8>,
    old_len: usize,
    new_len: usize,
    to: NonNull<u8>,
) -> bool {
    debug_assert!(old_len % page_size() == 0 && new_len % page_size() == 0 && new_len > 0);
    debug_assert!(to.as_ptr() as usize % page_size() == 0);
    // SAFETY: the caller guarantees both ranges are ours, the target's contents disposable.
    let p = keep_errno(|| unsafe {
        libc::mremap(
            ptr.as_ptr().cast(),
            old_len,
            new_len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            to.as_ptr().cast::<libc::c_void>(),
        )
    });
    p == to.as_ptr().cast()
}

/// Grows the mapping `[ptr, ptr + old_len)` to `new_len` bytes where it is (no move), if the
/// address space after it is free. Returns whether it grew.
///
/// # Safety
/// The range must be a whole mapping of ours.
pub(crate) unsafe fn grow_in_place(ptr: NonNull<u8>, old_len: usize, new_len: usize) -> bool {
    debug_assert!(old_len % page_size() == 0 && new_len % page_size() == 0);
    // SAFETY: the caller guarantees the range is a mapping of ours; without MREMAP_MAYMOVE the
    // kernel only extends it into free address space.
    let p = keep_errno(|| unsafe { libc::mremap(ptr.as_ptr().cast(), old_len, new_len, 0) });
    p == ptr.as_ptr().cast()
}

/// Whether this process runs under valgrind's memcheck: memcheck's documented client request
/// `CHECK_MEM_IS_ADDRESSABLE` on a local variable, which memcheck answers 0 (addressable), and
/// which runs natively, or under another valgrind tool, as a no-op that leaves its default, 1.
/// Other tools (callgrind, which counts the instructions of `cargo xtask icount` and `large`)
/// see the native path. Asked once; always `false` off x86_64.
///
/// For the one path whose system calls memcheck tracks wrongly: a growing fixed-address
/// `mremap` (the 2 MiB-aligned growth of a large block) leaves the grown part unaddressable to
/// it in some address layouts, though the kernel maps it. Under memcheck that growth takes a
/// plain `mremap` instead (docs/large-blocks.md).
pub(crate) fn under_memcheck() -> bool {
    use core::sync::atomic::{AtomicU8, Ordering};
    /// 0: not asked yet; 1: no; 2: yes.
    static ANSWER: AtomicU8 = AtomicU8::new(0);
    match ANSWER.load(Ordering::Relaxed) {
        1 => return false,
        2 => return true,
        _ => {}
    }
    let yes = ask_memcheck();
    ANSWER.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
    yes
}

/// The client request itself (see [`under_memcheck`]): valgrind's protocol on amd64, four
/// rotations of `rdi` by 128 bits in all and an `xchg %rbx,%rbx`, a no-op natively, which
/// valgrind's core recognises, reading the request from the array `rax` points to and writing
/// the answer into `rdx`.
#[cfg(target_arch = "x86_64")]
fn ask_memcheck() -> bool {
    /// memcheck's `VG_USERREQ__CHECK_MEM_IS_ADDRESSABLE`: its tool base `'M' << 24 | 'C' << 16`,
    /// fifth of its requests.
    const CHECK_MEM_IS_ADDRESSABLE: u64 = 0x4D43_0004;
    let probe: u64 = 0;
    let args: [u64; 6] = [
        CHECK_MEM_IS_ADDRESSABLE,
        &probe as *const u64 as u64,
        8,
        0,
        0,
        0,
    ];
    let mut answer: u64 = 1;
    // SAFETY: natively the sequence changes nothing (rdi rotated back to itself, a no-op
    // exchange) and `answer` keeps its 1; under valgrind the core reads `args` and `probe`
    // (valid for the call) and writes the answer into rdx. rdi is declared clobbered.
    unsafe {
        core::arch::asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            inout("rdx") answer,
            in("rax") args.as_ptr(),
            inout("rdi") 0u64 => _,
            options(nostack),
        );
    }
    answer == 0
}

#[cfg(not(target_arch = "x86_64"))]
fn ask_memcheck() -> bool {
    false
}

/// A coarse monotonic clock in milliseconds (`CLOCK_MONOTONIC_COARSE`: read from the vDSO, no
/// system call, a few milliseconds' resolution). 0 if the kernel refuses, which it does not.
pub(crate) fn coarse_millis() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct it is given; with a valid clock id it cannot fail
    // and so leaves errno alone.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}

/// This thread's CPU time so far (user + system, in µs) and its page faults (minor + major):
/// one `getrusage(RUSAGE_THREAD)`. Zeros if the kernel refuses (it does not on Linux).
pub(crate) fn thread_usage() -> (u64, u64) {
    let mut usage = core::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes the struct it is given; all-zero is a valid `rusage`.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) != 0 {
            return (0, 0);
        }
        usage.assume_init()
    };
    let micros = |t: libc::timeval| (t.tv_sec as u64) * 1_000_000 + t.tv_usec as u64;
    (
        micros(usage.ru_utime) + micros(usage.ru_stime),
        (usage.ru_minflt + usage.ru_majflt) as u64,
    )
}

/// Nanoseconds on the monotonic clock (`clock_gettime`, served by the vDSO: no system call).
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// The value of an environment variable, read without allocating (`getenv`).
///
/// The bytes are borrowed from the process environment, which hakmem never modifies; a program
/// that calls `setenv` on the same variable concurrently races as it would with any `getenv`.
pub(crate) fn getenv(name: &CStr) -> Option<&'static [u8]> {
    getenv_cstr(name).map(CStr::to_bytes)
}

/// [`getenv`], NUL terminator kept (a value to hand to another system call, a path).
pub(crate) fn getenv_cstr(name: &CStr) -> Option<&'static CStr> {
    // SAFETY: `name` is NUL-terminated; getenv returns null or a NUL-terminated string in the
    // environment block, which lives as long as the process while it is not modified.
    unsafe {
        let value = libc::getenv(name.as_ptr());
        if value.is_null() {
            None
        } else {
            Some(CStr::from_ptr(value))
        }
    }
}

/// Writes all of `bytes` to stderr (fd 2), ignoring errors: diagnostics must never fail.
pub(crate) fn write_stderr(bytes: &[u8]) {
    write_all(2, bytes);
}

/// Writes all of `bytes` to `fd`, ignoring errors (a closed descriptor, a full disk): a log
/// line must never fail the program's allocation.
pub(crate) fn write_all(fd: i32, mut bytes: &[u8]) {
    keep_errno(|| {
        while !bytes.is_empty() {
            // SAFETY: the pointer and length describe a live byte slice.
            let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
            if n <= 0 {
                if n < 0 && last_errno() == libc::EINTR {
                    continue;
                }
                return;
            }
            // (`get`: no panic path; the kernel never reports more than it was given.)
            bytes = bytes.get(n as usize..).unwrap_or_default();
        }
    })
}

/// Opens `path` (a NUL-terminated byte string) for appending, creating it (mode 0644) if need
/// be, close-on-exec. `None` if the kernel refuses.
pub(crate) fn open_append(path: &CStr) -> Option<i32> {
    // SAFETY: `path` is NUL-terminated; open reads it and touches nothing else.
    let fd = keep_errno(|| unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC,
            0o644 as libc::c_uint,
        )
    });
    (fd >= 0).then_some(fd)
}

/// Closes `fd`, a descriptor of ours nobody else uses.
pub(crate) fn close(fd: i32) {
    // SAFETY: closing a descriptor touches no memory; the caller owns it.
    keep_errno(|| unsafe { libc::close(fd) });
}

/// This thread's `errno`.
#[inline]
pub(crate) fn last_errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot, valid for the thread's life.
    unsafe { *libc::__errno_location() }
}

/// Sets this thread's `errno`.
#[inline]
pub(crate) fn set_errno(value: i32) {
    // SAFETY: as in `last_errno`.
    unsafe { *libc::__errno_location() = value }
}

/// Runs `f` (a system call that may fail) and puts `errno` back as it was: hakmem's own
/// refused calls are not the program's errors. One call to find this thread's `errno`, a load
/// and a store, next to a system call.
#[inline(always)]
pub(crate) fn keep_errno<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: __errno_location returns this thread's errno slot, valid for the thread's life.
    let slot = unsafe { libc::__errno_location() };
    // SAFETY: as above.
    let saved = unsafe { *slot };
    let result = f();
    // SAFETY: as above (`f` runs on this thread).
    unsafe { *slot = saved };
    result
}

/// Ends the process with SIGABRT. Never unwinds.
pub(crate) fn abort() -> ! {
    // SAFETY: abort has no preconditions and does not return.
    unsafe { libc::abort() }
}
