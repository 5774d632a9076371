//! Diagnostics written without allocating: fatal errors and warnings (stderr), log lines and the
//! report (where `HAKMEM_LOG` says; see [`LogOutput`]).
//!
//! Messages are formatted with `core::fmt` into a fixed buffer on the stack (formatting itself
//! never allocates; only `format!` does) and written with one `write(2)`.

use core::ffi::CStr;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicI32, Ordering};

use crate::os;
use crate::policy::LogOutput;

/// Longest message written; longer ones are truncated.
const LINE_MAX: usize = 512;

/// A fixed-capacity, truncating text buffer on the stack.
pub(crate) struct StackBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackBuf<N> {
    pub(crate) const fn new() -> Self {
        StackBuf {
            buf: [0; N],
            len: 0,
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl<const N: usize> Write for StackBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Byte by byte through `get_mut` and `zip`: no panic path, as everything on the
        // allocation paths (docs/preload.md).
        let free = self.buf.get_mut(self.len..).unwrap_or_default();
        let n = free.len().min(s.len());
        for (dst, &src) in free.iter_mut().zip(s.as_bytes()) {
            *dst = src;
        }
        self.len += n;
        // Truncation is not an error: a cut message beats a formatting failure.
        Ok(())
    }
}

/// `hakmem: <kind><message>\n`, cut to fit.
fn format_line(line: &mut StackBuf<LINE_MAX>, kind: &str, args: fmt::Arguments<'_>) {
    // Writing into a `StackBuf` cannot fail.
    let _ = line.write_str("hakmem: ");
    let _ = line.write_str(kind);
    let _ = line.write_fmt(args);
    if line.len == LINE_MAX {
        line.len -= 1;
    }
    let _ = line.write_str("\n");
}

/// Writes `hakmem: <kind><message>\n` to stderr as one write.
fn emit(kind: &str, args: fmt::Arguments<'_>) {
    let mut line = StackBuf::<LINE_MAX>::new();
    format_line(&mut line, kind, args);
    os::write_stderr(line.as_bytes());
}

/// Writes a log line (the learning modes' log) where `HAKMEM_LOG`, or else the policy's
/// `output`, sends it (see [`LogOutput`]); nowhere by default. The program goes on.
#[cold]
#[inline(never)]
pub(crate) fn log(output: LogOutput, args: fmt::Arguments<'_>) {
    let fd = match log_sink() {
        Sink::Policy => match output {
            LogOutput::WhenAsked => return,
            LogOutput::Stderr => 2,
        },
        Sink::Off => return,
        Sink::Fd(fd) => fd,
    };
    let mut line = StackBuf::<LINE_MAX>::new();
    format_line(&mut line, "", args);
    os::write_all(fd, line.as_bytes());
}

/// Writes a multi-line text of at most `N` bytes as one write, without allocating: to the file
/// `HAKMEM_LOG` names, if it names one, else to stderr (the report at exit, which
/// `HAKMEM_REPORT=1` asked for).
pub(crate) fn write_block<const N: usize>(body: impl FnOnce(&mut StackBuf<N>) -> fmt::Result) {
    let mut buf = StackBuf::<N>::new();
    // Writing into a `StackBuf` cannot fail; a body that fails leaves what it wrote.
    let _ = body(&mut buf);
    let fd = match log_sink() {
        Sink::Fd(fd) => fd,
        Sink::Policy | Sink::Off => 2,
    };
    os::write_all(fd, buf.as_bytes());
}

/// Where `HAKMEM_LOG` sends log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sink {
    /// Unset or empty: where the policy says.
    Policy,
    /// `0`: nowhere.
    Off,
    /// `1`/`stderr` (fd 2), or the file it names (opened once, kept open).
    Fd(i32),
}

/// The environment variable that turns the log on.
const ENV_LOG: &CStr = c"HAKMEM_LOG";

/// [`Sink`] encoded: [`UNREAD`] until `HAKMEM_LOG` is read, then [`POLICY`], [`OFF`] or a file
/// descriptor.
static SINK: AtomicI32 = AtomicI32::new(UNREAD);
const UNREAD: i32 = -3;
const POLICY: i32 = -2;
const OFF: i32 = -1;

/// `HAKMEM_LOG`, read (and its file opened) at the first call. Two threads logging their first
/// line at once may both open the file; the one that loses the race closes its descriptor.
fn log_sink() -> Sink {
    let code = match SINK.load(Ordering::Acquire) {
        UNREAD => {
            let code = match os::getenv_cstr(ENV_LOG) {
                None => POLICY,
                Some(value) => match value.to_bytes() {
                    b"" => POLICY,
                    b"0" => OFF,
                    b"1" | b"stderr" => 2,
                    _ => open_log_file(value),
                },
            };
            match SINK.compare_exchange(UNREAD, code, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => code,
                Err(first) => {
                    if code > 2 {
                        // A descriptor we opened and nobody else has seen.
                        os::close(code);
                    }
                    first
                }
            }
        }
        code => code,
    };
    match code {
        POLICY => Sink::Policy,
        OFF | UNREAD => Sink::Off,
        fd => Sink::Fd(fd),
    }
}

/// Opens `path`, the file `HAKMEM_LOG` names; [`OFF`] with one warning if it cannot.
#[cold]
fn open_log_file(path: &CStr) -> i32 {
    match os::open_append(path) {
        Some(fd) => fd,
        None => {
            warn(format_args!(
                "HAKMEM_LOG={}: cannot open it for appending; the log stays off",
                Printable(path.to_bytes())
            ));
            OFF
        }
    }
}

/// A size in bytes shown in the unit that reads best: `32 MiB`, `748 KiB`, `100 B`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bytes(pub usize);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const KIB: usize = 1 << 10;
        const MIB: usize = 1 << 20;
        let n = self.0;
        if n >= MIB && n % MIB == 0 {
            write!(f, "{} MiB", n / MIB)
        } else if n >= KIB && n % KIB == 0 {
            write!(f, "{} KiB", n / KIB)
        } else {
            write!(f, "{n} B")
        }
    }
}

/// Prints a warning line; the program goes on.
pub(crate) fn warn(args: fmt::Arguments<'_>) {
    emit("warning: ", args);
}

/// Prints `hakmem: <message>` and aborts the process (SIGABRT). Never unwinds, never allocates.
#[cold]
#[inline(never)]
pub(crate) fn fatal(args: fmt::Arguments<'_>) -> ! {
    emit("", args);
    os::abort()
}

/// Displays arbitrary bytes (an environment value) with anything but printable ASCII as `?`.
pub(crate) struct Printable<'a>(pub &'a [u8]);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 64;
        for &b in self.0.iter().take(SHOWN) {
            f.write_char(if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            })?;
        }
        if self.0.len() > SHOWN {
            f.write_str("…")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_buf_truncates() {
        let mut b = StackBuf::<8>::new();
        write!(b, "{}-{}", 12345, 67890).unwrap();
        assert_eq!(b.as_bytes(), b"12345-67");
    }

    #[test]
    fn bytes_in_their_unit() {
        let mut b = StackBuf::<64>::new();
        write!(
            b,
            "{} {} {} {}",
            Bytes(32 << 20),
            Bytes(748 << 10),
            Bytes(100),
            Bytes(0)
        )
        .unwrap();
        assert_eq!(b.as_bytes(), b"32 MiB 748 KiB 100 B 0 B");
    }

    #[test]
    fn printable_masks_control_bytes() {
        let mut b = StackBuf::<16>::new();
        write!(b, "{}", Printable(b"a\x01b\n")).unwrap();
        assert_eq!(b.as_bytes(), b"a?b?");
    }
}
