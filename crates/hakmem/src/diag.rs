//! Diagnostics written to stderr without allocating: warnings, log lines and fatal errors.
//!
//! Messages are formatted with `core::fmt` into a fixed buffer on the stack (formatting itself
//! never allocates; only `format!` does) and written with one `write(2)`.

use core::fmt::{self, Write};

use crate::os;

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
        &self.buf[..self.len]
    }
}

impl<const N: usize> Write for StackBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        // Truncation is not an error: a cut message beats a formatting failure.
        Ok(())
    }
}

/// Writes `hakmem: <kind><message>\n` to stderr as one write.
fn emit(kind: &str, args: fmt::Arguments<'_>) {
    let mut line = StackBuf::<LINE_MAX>::new();
    // Writing into a `StackBuf` cannot fail.
    let _ = line.write_str("hakmem: ");
    let _ = line.write_str(kind);
    let _ = line.write_fmt(args);
    if line.len == LINE_MAX {
        line.len -= 1;
    }
    let _ = line.write_str("\n");
    os::write_stderr(line.as_bytes());
}

/// Prints an informational line (the learning modes' log); the program goes on.
pub(crate) fn note(args: fmt::Arguments<'_>) {
    emit("", args);
}

/// Writes a multi-line text of at most `N` bytes to stderr as one write, without allocating.
pub(crate) fn write_block<const N: usize>(body: impl FnOnce(&mut StackBuf<N>) -> fmt::Result) {
    let mut buf = StackBuf::<N>::new();
    // Writing into a `StackBuf` cannot fail; a body that fails leaves what it wrote.
    let _ = body(&mut buf);
    os::write_stderr(buf.as_bytes());
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
