//! Helpers shared by the integration tests: running one `#[ignore]`d test of the current test
//! binary in a child process, for what must be seen from outside (stderr, an abort, the
//! environment read once per process).

#![allow(dead_code)] // each test binary uses part of it

use std::process::{Command, Output};

/// Runs the ignored test `name` of this test binary alone in a child process, with `env` set
/// (a `None` value removes the variable). hakmem's variables (`HAKMEM_MODE`, `HAKMEM_LOG`,
/// `HAKMEM_REPORT`) are removed unless `env` sets them, so the caller's shell cannot change the
/// outcome.
pub fn run_child(name: &str, env: &[(&str, Option<&str>)]) -> Output {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--ignored",
        "--exact",
        name,
        "--nocapture",
        "--test-threads=1",
    ]);
    cmd.env_remove("HAKMEM_MODE")
        .env_remove("HAKMEM_LOG")
        .env_remove("HAKMEM_REPORT")
        .env("RUST_BACKTRACE", "0");
    for (key, value) in env {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    cmd.output().expect("run the test binary")
}

/// The signal that ended the child, if any.
pub fn signal(out: &Output) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    out.status.signal()
}

/// The child's stderr lines written by hakmem.
pub fn hakmem_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("hakmem: "))
        .map(str::to_owned)
        .collect()
}

/// The value the child printed as `key=value` (libtest may have printed other text before it
/// on the same line).
pub fn child_value(out: &Output, key: &str) -> Option<String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tag = format!("{key}=");
    let start = stdout.find(&tag)? + tag.len();
    Some(
        stdout[start..]
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_owned(),
    )
}

/// The most blocks a pool span holds (4,096 blocks of 16 bytes): a block freed to the pool is
/// handed out again within this many allocations of its class.
pub const POOL_SPAN_BLOCKS: usize = 4096;

/// Calls `alloc` until it returns `target` (a pool block just freed: its span hands it out again
/// once the blocks already on its free list are gone, docs/pool.md) or [`POOL_SPAN_BLOCKS`]
/// more blocks came. Returns whether `target` came, and the other blocks, for the caller to free.
pub fn alloc_until(target: *mut u8, mut alloc: impl FnMut() -> *mut u8) -> (bool, Vec<*mut u8>) {
    let mut others = Vec::new();
    for _ in 0..=POOL_SPAN_BLOCKS {
        let p = alloc();
        assert!(!p.is_null());
        if p == target {
            return (true, others);
        }
        others.push(p);
    }
    (false, others)
}

/// How much of its full size a long test runs: `HAKMEM_TEST_SCALE` (a factor in `(0, 1]`,
/// default 1). The sanitizer and valgrind runs (`cargo xtask sanitizers`) lower it; the
/// figures a test promises (docs/reliability.md) hold at 1.
pub fn scale() -> f64 {
    std::env::var("HAKMEM_TEST_SCALE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0 && *s <= 1.0)
        .unwrap_or(1.0)
}

/// `n` scaled by [`scale`], at least 1.
pub fn scaled(n: u64) -> u64 {
    ((n as f64 * scale()) as u64).max(1)
}

/// The resident set of this process, in bytes (`/proc/self/statm`, second field). Read into a
/// stack buffer: reading it must not disturb what it measures.
pub fn rss() -> usize {
    use std::io::Read;
    let mut buf = [0u8; 128];
    let mut file = std::fs::File::open("/proc/self/statm").expect("open /proc/self/statm");
    let n = file.read(&mut buf).expect("read /proc/self/statm");
    let text = std::str::from_utf8(&buf[..n]).unwrap();
    let pages: usize = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

/// A small, fast, seedable generator (SplitMix64): the tests need reproducible streams, not
/// cryptographic ones.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Log-uniform in `lo..=hi` (`0 < lo <= hi`): every power of two in between is as likely.
    pub fn log_uniform(&mut self, lo: usize, hi: usize) -> usize {
        let (lo_bits, hi_bits) = (lo.ilog2(), hi.ilog2());
        let bits = lo_bits + self.below((hi_bits - lo_bits + 1) as usize) as u32;
        let base = 1usize << bits;
        (base + self.below(base)).clamp(lo, hi)
    }
}

/// A byte pattern derived from a block's id, written over a whole block and checked before it
/// is freed: the id itself in the first 8 bytes, its complement rotated in the last 8 (blocks of
/// 16 bytes and more), one byte derived from the id everywhere else. Writing and checking are a
/// `memset`, two words and a `memcmp`, so multi-megabyte blocks stay cheap in debug builds.
pub mod pattern {
    /// The byte between the two id words.
    pub fn fill_byte(id: u64) -> u8 {
        (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
    }

    fn tail_word(id: u64) -> u64 {
        !id.rotate_left(17)
    }

    /// The byte at `i` of a block of `size` bytes (`size >= 8`) with this id.
    pub fn expected(id: u64, size: usize, i: usize) -> u8 {
        if i < 8 {
            id.to_le_bytes()[i]
        } else if size >= 16 && i >= size - 8 {
            tail_word(id).to_le_bytes()[i - (size - 8)]
        } else {
            fill_byte(id)
        }
    }

    /// Writes the pattern over `size >= 8` bytes at `ptr`.
    ///
    /// # Safety
    /// `ptr` is writable for `size` bytes.
    pub unsafe fn fill(ptr: *mut u8, size: usize, id: u64) {
        assert!(size >= 8);
        // SAFETY: all writes lie in `[ptr, ptr + size)` (caller).
        unsafe {
            ptr.write_bytes(fill_byte(id), size);
            ptr.cast::<[u8; 8]>().write_unaligned(id.to_le_bytes());
            if size >= 16 {
                ptr.add(size - 8)
                    .cast::<[u8; 8]>()
                    .write_unaligned(tail_word(id).to_le_bytes());
            }
        }
    }

    /// Checks the first `upto` bytes of a block that was filled as `size` bytes with this id
    /// (`upto < size` after a shrinking realloc); `Err` names the first wrong byte.
    ///
    /// # Safety
    /// `ptr` is readable for `upto` bytes.
    pub unsafe fn check(ptr: *const u8, size: usize, id: u64, upto: usize) -> Result<(), String> {
        assert!(size >= 8 && upto <= size);
        // SAFETY: readable for `upto` bytes (caller).
        let got = unsafe { std::slice::from_raw_parts(ptr, upto) };
        let middle_end = if size >= 16 { size - 8 } else { size }.min(upto);
        let fast_ok = {
            let head = upto.min(8);
            let head_ok = (0..head).all(|i| got[i] == expected(id, size, i));
            let middle = if middle_end > 8 {
                &got[8..middle_end]
            } else {
                &[][..]
            };
            // All equal (one `memcmp` of the slice against itself shifted by one) and the
            // first one right.
            let middle_ok = match middle.split_first() {
                None => true,
                Some((&first, rest)) => {
                    first == fill_byte(id) && rest == &middle[..middle.len() - 1]
                }
            };
            let tail_ok = (middle_end.max(head)..upto).all(|i| got[i] == expected(id, size, i));
            head_ok && middle_ok && tail_ok
        };
        if fast_ok {
            return Ok(());
        }
        let i = (0..upto)
            .find(|&i| got[i] != expected(id, size, i))
            .expect("a mismatch exists");
        Err(format!(
            "block {ptr:p} ({size} bytes, id {id}) corrupted at byte {i}: {:#04x}, expected {:#04x}",
            got[i],
            expected(id, size, i)
        ))
    }
}
