//! `HAKMEM_REPORT=1`: RESEARCH prints its statistics report on stderr when the process exits,
//! without allocating.
//!
//! An `atexit` handler has no argument, so it must find the allocator through a global: the
//! first RESEARCH allocator to start learning offers itself ([`offer`]), and it is taken only if
//! it lives in a `static` — its address inside a writable segment of a loaded ELF object, checked
//! with `dl_iterate_phdr` — because only a static is sure to be neither moved nor dropped before
//! the handler runs. So: one allocator per process is reported (the first), a `static` one (the
//! `#[global_allocator]` or any other); one on the stack or the heap is not. The report is
//! formatted into a buffer on the handler's stack and written with one `write(2)`.

use core::cell::UnsafeCell;
use core::ffi::{c_int, c_void};
use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::allocator::Allocator;
use crate::diag;
use crate::os;
use crate::policy::Policy;
use crate::site::{SiteKey, SiteStat};

/// The variable that asks for the report.
pub(crate) const ENV_REPORT: &core::ffi::CStr = c"HAKMEM_REPORT";

/// The largest report written (longer ones are cut).
const REPORT_MAX: usize = 8192;

/// Something that can write the report.
pub(crate) trait Report: Sync {
    /// Writes the report.
    fn report(&self, out: &mut dyn fmt::Write) -> fmt::Result;
}

/// The allocator reported at exit.
static TARGET: Target = Target::new();

/// A slot set once: a `OnceLock` without the panic path that `OnceLock::set` keeps (through
/// `Once`), which [`offer`], run inside the allocator, must not reach (docs/preload.md).
struct Target {
    /// [`Target::FREE`]; [`Target::SETTING`] while the one thread that claimed the slot writes
    /// it; then [`Target::SET`].
    state: AtomicU8,
    slot: UnsafeCell<Option<&'static dyn Report>>,
}

// SAFETY: `slot` is written once, by the one thread that moved `state` from FREE to SETTING,
// before it stores SET with Release; it is read only after SET is loaded with Acquire.
unsafe impl Sync for Target {}

impl Target {
    const FREE: u8 = 0;
    const SETTING: u8 = 1;
    const SET: u8 = 2;

    const fn new() -> Target {
        Target {
            state: AtomicU8::new(Target::FREE),
            slot: UnsafeCell::new(None),
        }
    }

    /// What was set, once it is.
    fn get(&self) -> Option<&'static dyn Report> {
        if self.state.load(Ordering::Acquire) != Target::SET {
            return None;
        }
        // SAFETY: SET was published after the only write (see `Sync` above).
        unsafe { *self.slot.get() }
    }

    /// Sets `r` if nothing was set (or is being set) before; whether it did.
    fn set(&self, r: &'static dyn Report) -> bool {
        if self
            .state
            .compare_exchange(
                Target::FREE,
                Target::SETTING,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return false;
        }
        // SAFETY: we claimed the slot: no other thread writes it, and none reads it before SET.
        unsafe { *self.slot.get() = Some(r) };
        self.state.store(Target::SET, Ordering::Release);
        true
    }
}

/// `HAKMEM_REPORT`: 0 not read yet, 1 off, 2 on.
static WANTED: AtomicU8 = AtomicU8::new(0);

/// Whether `HAKMEM_REPORT=1` (read once).
fn wanted() -> bool {
    match WANTED.load(Ordering::Relaxed) {
        0 => {
            let on = os::getenv(ENV_REPORT) == Some(b"1".as_slice());
            WANTED.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
        w => w == 2,
    }
}

/// Offers `r` as the allocator to report at exit: taken if the report is wanted, none was taken
/// before, and `r` lives in a static.
pub(crate) fn offer<R: Report + 'static>(r: &R) {
    let addr = r as *const R as usize;
    if !wanted() || TARGET.get().is_some() || !is_static(addr, core::mem::size_of::<R>()) {
        return;
    }
    // SAFETY: `r` lies in a writable segment of a loaded object, i.e. it is a static (a
    // thread-local's instances live elsewhere): never moved, never dropped while the object is
    // loaded, and the handler registered below belongs to that object too.
    let r: &'static R = unsafe { &*(r as *const R) };
    if TARGET.set(r) {
        // SAFETY: registering a plain `extern "C" fn()` with atexit has no preconditions.
        unsafe { libc::atexit(at_exit) };
    }
}

extern "C" fn at_exit() {
    if let Some(r) = TARGET.get() {
        diag::write_block::<REPORT_MAX>(|buf| {
            fmt::Write::write_str(buf, "hakmem: report at exit (HAKMEM_REPORT=1)\n")?;
            r.report(buf)
        });
    }
}

/// Whether `[addr, addr + len)` lies inside a writable `PT_LOAD` segment of an object loaded in
/// this process (the executable or a shared library): where statics live.
pub(crate) fn is_static(addr: usize, len: usize) -> bool {
    struct Query {
        start: usize,
        end: usize,
        found: bool,
    }
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: the loader passes a valid `dl_phdr_info` whose `dlpi_phdr` points to
        // `dlpi_phnum` program headers; `data` is the `Query` below, borrowed for the call.
        unsafe {
            let info = &*info;
            let query = &mut *data.cast::<Query>();
            for i in 0..usize::from(info.dlpi_phnum) {
                let ph = &*info.dlpi_phdr.add(i);
                if ph.p_type != libc::PT_LOAD || ph.p_flags & libc::PF_W == 0 {
                    continue;
                }
                let lo = (info.dlpi_addr as usize).wrapping_add(ph.p_vaddr as usize);
                let hi = lo.wrapping_add(ph.p_memsz as usize);
                if lo <= query.start && query.end <= hi {
                    query.found = true;
                    return 1;
                }
            }
        }
        0
    }
    let mut query = Query {
        start: addr,
        end: addr.saturating_add(len),
        found: false,
    };
    // SAFETY: `visit` matches the callback's signature and only reads what the loader hands
    // it; `query` outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&mut query as *mut Query).cast()) };
    query.found
}

/// The report: the statistics, then the heaviest sites by bytes (RESEARCH's profile).
impl<P: Policy> Report for Allocator<P> {
    fn report(&self, out: &mut dyn core::fmt::Write) -> core::fmt::Result {
        writeln!(out, "{}", self.stats())?;
        // The heaviest sites by bytes, without allocating: a fixed top list.
        const TOP: usize = 8;
        let mut top: [Option<SiteStat>; TOP] = [None; TOP];
        for row in self.sites() {
            let bytes = |s: &Option<SiteStat>| s.map_or(0, |s| s.bytes);
            if row.bytes > bytes(&top[TOP - 1]) {
                let mut i = TOP - 1;
                top[i] = Some(row);
                while i > 0 && bytes(&top[i]) > bytes(&top[i - 1]) {
                    top.swap(i, i - 1);
                    i -= 1;
                }
            }
        }
        if top[0].is_some() {
            writeln!(
                out,
                "  sites (heaviest by bytes; allocs, bytes, system/mmap/cached):"
            )?;
        }
        for s in top.iter().flatten() {
            match s.site {
                SiteKey::Caller(id) => write!(out, "    site {id:#010x}")?,
                SiteKey::SizeRange(k) => write!(out, "    size 2^{k:<2}     ")?,
            }
            writeln!(
                out,
                "  {:>10}  {:>14}  {}/{}/{}",
                s.allocs, s.bytes, s.system, s.mmap, s.cached
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::boxed::Box;

    use core::sync::atomic::AtomicU64;

    // Interior mutability puts them in writable segments (.data, .bss), like an allocator.
    static IN_DATA: AtomicU64 = AtomicU64::new(7);
    static IN_BSS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

    #[test]
    fn the_target_is_set_once() {
        struct Named(&'static str);
        impl Report for Named {
            fn report(&self, out: &mut dyn fmt::Write) -> fmt::Result {
                out.write_str(self.0)
            }
        }
        static FIRST: Named = Named("first");
        static SECOND: Named = Named("second");
        let target = Target::new();
        assert!(target.get().is_none());
        assert!(target.set(&FIRST));
        assert!(!target.set(&SECOND), "set once");
        let mut out = std::string::String::new();
        target.get().unwrap().report(&mut out).unwrap();
        assert_eq!(out, "first");
    }

    #[test]
    fn statics_are_static_the_stack_and_heap_are_not() {
        assert!(is_static(core::ptr::addr_of!(IN_DATA) as usize, 8));
        assert!(is_static(IN_BSS.as_ptr() as usize, 32));
        let local = [0u64; 4];
        assert!(!is_static(local.as_ptr() as usize, 32));
        let boxed = Box::new([0u64; 4]);
        assert!(!is_static(boxed.as_ptr() as usize, 32));
    }
}
