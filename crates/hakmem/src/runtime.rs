//! The run-time configuration of [`mode::Runtime`](crate::mode::Runtime): `HAKMEM_MODE`, read
//! once per process, lazily, without allocating.
//!
//! The whole state is one byte. `0` means "not read yet"; otherwise it is a [`Mode`] code. The
//! first reader parses the variable and publishes the result with a compare-exchange, so racing
//! first readers agree and exactly one of them prints the warning for a bad value.

use core::sync::atomic::{AtomicU8, Ordering};

use crate::diag;
use crate::policy::Mode;

/// The environment variable that names the mode of `Allocator<Runtime>`.
pub const ENV_MODE: &core::ffi::CStr = c"HAKMEM_MODE";

/// The mode used when `HAKMEM_MODE` is unset, empty or unknown.
pub const FALLBACK: Mode = Mode::Balanced;

/// `0` until `HAKMEM_MODE` has been read; then `Mode as u8`.
static MODE: AtomicU8 = AtomicU8::new(0);

/// The mode in effect, reading `HAKMEM_MODE` on first use.
#[inline(always)]
pub(crate) fn mode() -> Mode {
    match Mode::from_code(MODE.load(Ordering::Relaxed)) {
        Some(mode) => mode,
        None => init(),
    }
}

/// The mode in effect if it has been read, without reading it.
pub(crate) fn peek() -> Option<Mode> {
    Mode::from_code(MODE.load(Ordering::Relaxed))
}

/// What a value of `HAKMEM_MODE` means: the mode, and whether the value was rejected.
pub(crate) fn interpret(value: Option<&[u8]>) -> (Mode, bool) {
    match value {
        None | Some(b"") => (FALLBACK, false),
        Some(v) => match Mode::parse(v) {
            Some(mode) => (mode, false),
            None => (FALLBACK, true),
        },
    }
}

#[cold]
#[inline(never)]
fn init() -> Mode {
    let value = crate::os::getenv(ENV_MODE);
    let (mode, rejected) = interpret(value);
    match MODE.compare_exchange(0, mode as u8, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            if rejected {
                // `rejected` implies the variable was set.
                warn_rejected(value.unwrap_or_default());
            }
            mode
        }
        // Another thread published first; it has warned if it had to.
        Err(code) => Mode::from_code(code).unwrap_or(FALLBACK),
    }
}

fn warn_rejected(value: &[u8]) {
    diag::warn(format_args!(
        "HAKMEM_MODE=\"{}\" is not a mode; accepted values (any case): \
         minimal, fast, balanced, learning, research; using {}",
        diag::Printable(value),
        FALLBACK.name()
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpret_values() {
        assert_eq!(interpret(None), (Mode::Balanced, false));
        assert_eq!(interpret(Some(b"")), (Mode::Balanced, false));
        assert_eq!(interpret(Some(b"MINIMAL")), (Mode::Minimal, false));
        assert_eq!(interpret(Some(b"Research")), (Mode::Research, false));
        assert_eq!(interpret(Some(b"fast ")), (Mode::Balanced, true));
        assert_eq!(interpret(Some(b"turbo")), (Mode::Balanced, true));
    }
}
