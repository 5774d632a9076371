//! `HAKMEM_REPORT=1`: an allocator's statistics report, written when the process exits,
//! without allocating.
//!
//! An `atexit` handler has no argument, so it must find the allocator through a global, and the
//! allocator must still be there when the handler runs. Only the type system can promise that:
//! the program registers an allocator explicitly with
//! [`Allocator::report_at_exit`](crate::Allocator::report_at_exit), which takes `&'static self`
//! (a `static`, such as the `#[global_allocator]`, or a leaked box). One allocator per process
//! is reported, the first registered; the preload library registers its own at load time. The
//! report is formatted into a buffer on the handler's stack and written with one `write(2)`, to
//! stderr or to the file `HAKMEM_LOG` names.

use core::cell::UnsafeCell;
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

/// Registers `r` to be reported at exit if the report is wanted (`HAKMEM_REPORT=1`) and no
/// allocator was registered before; whether it was.
pub(crate) fn register(r: &'static dyn Report) -> bool {
    if !wanted() || !TARGET.set(r) {
        return false;
    }
    // SAFETY: registering a plain `extern "C" fn()` with atexit has no preconditions.
    unsafe { libc::atexit(at_exit) };
    true
}

extern "C" fn at_exit() {
    if let Some(r) = TARGET.get() {
        diag::write_block::<REPORT_MAX>(|buf| {
            fmt::Write::write_str(buf, "hakmem: report at exit (HAKMEM_REPORT=1)\n")?;
            r.report(buf)
        });
    }
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
}
