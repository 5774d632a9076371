//! `fork()` while other threads allocate, in the mode the cargo features select (`Hakmem` is
//! this binary's global allocator; `cargo xtask test` runs it once per mode).
//!
//! Three threads churn blocks of every path (small, mid-sized, large and cached) while a fourth
//! forks 100 times. A fork may catch another thread anywhere inside the allocator, holding
//! whatever it holds; the child has only the forking thread. Every child first checks and frees
//! blocks the churners allocated before the fork and handed to the forking thread (in the pool,
//! frees into spans whose owners do not exist in the child), then allocates, checks and frees
//! blocks of every path, spawns a thread that does the same (a fresh thread cache), and exits 0
//! — within a timeout, so a lock left held across `fork` shows as a hung child, not a hung
//! test.

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{pattern, scaled, Rng};
use hakmem::Hakmem;

#[global_allocator]
static GLOBAL: Hakmem = Hakmem::new();

const FORKS: u64 = 100;
const CHURNERS: usize = 3;
/// How long a child may take. Generous: the machine is shared, and a child of a process under
/// valgrind runs under valgrind too. A deadlock never ends, so any finite bound catches it.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// The sizes a child and the churners use: both sides of every threshold of every mode.
const SIZES: [usize; 9] = [
    8,
    24,
    100,
    1000,
    5000,
    70_000,
    600 << 10,
    (2 << 20) + 1,
    4 << 20,
];

/// Allocates, fills, checks and frees one block of each size twice over (the second round hits
/// the caches the first one filled), and with `grow`, grows a vector across every threshold;
/// `Err` says what went wrong.
fn exercise(seed: u64, grow: bool) -> Result<(), String> {
    let mut blocks = Vec::new();
    for round in 0..2u64 {
        for (i, &size) in SIZES.iter().enumerate() {
            let layout = Layout::from_size_align(size, 16).unwrap();
            // SAFETY: a valid layout with a non-zero size.
            let p = unsafe { GLOBAL.alloc(layout) };
            if p.is_null() {
                return Err(format!("null for {size} bytes"));
            }
            let id = seed * 100 + round * 10 + i as u64;
            // SAFETY: `p` holds `size` bytes.
            unsafe { pattern::fill(p, size, id) };
            blocks.push((p, layout, id));
        }
        for (p, layout, id) in blocks.drain(..) {
            // SAFETY: a live block of GLOBAL with this layout, freed once.
            unsafe {
                pattern::check(p, layout.size(), id, layout.size())?;
                GLOBAL.dealloc(p, layout);
            }
        }
    }
    if !grow {
        return Ok(());
    }
    // And through std: a vector grown by doubling from 16 B to 4 MiB (realloc on every path,
    // across every threshold; `extend_from_within` copies with `memcpy`) and a string.
    let mut v: Vec<u8> = (0..16).map(|i| seed as u8 ^ i).collect();
    while v.len() < 4 << 20 {
        v.extend_from_within(..);
    }
    if let Some(at) = (0..v.len())
        .step_by(4093)
        .find(|&i| v[i] != seed as u8 ^ (i % 16) as u8)
    {
        return Err(format!("vector contents at {at}"));
    }
    let s = format!("{seed}-{}", v.len());
    if s != format!("{seed}-{}", 4 << 20) {
        return Err(format!("string {s}"));
    }
    Ok(())
}

/// A block a churner handed to the forking thread: address, layout, pattern id.
type Handed = (usize, Layout, u64);

/// Checks and frees blocks another thread allocated.
fn free_handed(blocks: &[Handed]) -> Result<(), String> {
    for &(p, layout, id) in blocks {
        // SAFETY: a live block of GLOBAL with this layout (in this process's copy of memory),
        // freed once here.
        unsafe {
            pattern::check(p as *const u8, layout.size(), id, layout.size())?;
            GLOBAL.dealloc(p as *mut u8, layout);
        }
    }
    Ok(())
}

/// What a forked child runs, given the blocks the churners handed over before the fork; its
/// return value is the exit status.
fn child(seed: u64, handed: &[Handed]) -> i32 {
    let outcome = std::panic::catch_unwind(|| {
        free_handed(handed)?;
        exercise(seed, true)?;
        // A new thread in the child: its first allocation sets up a thread cache (where the
        // mode has one) after the fork.
        thread::spawn(move || exercise(seed + 1, false))
            .join()
            .map_err(|_| "the child's thread panicked".to_owned())?
    });
    match outcome {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("fork child {seed}: {e}");
            1
        }
        Err(_) => 2,
    }
}

/// Waits for `pid` at most `timeout`; kills it if it is still running then.
fn wait_with_timeout(pid: libc::pid_t, timeout: Duration) -> Result<i32, String> {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is a valid out-pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid {
            return if libc::WIFEXITED(status) {
                Ok(libc::WEXITSTATUS(status))
            } else {
                Err(format!(
                    "child {pid} killed by signal {}",
                    libc::WTERMSIG(status)
                ))
            };
        }
        if rc < 0 {
            return Err(format!(
                "waitpid({pid}): {}",
                std::io::Error::last_os_error()
            ));
        }
        if start.elapsed() > timeout {
            let stacks = stacks_of(pid);
            // SAFETY: `pid` is our child, still running.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Err(format!(
                "child {pid} still running after {timeout:?}: deadlocked after fork\n{stacks}"
            ));
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// The stacks of a hung process, where gdb is installed: what a deadlock report needs.
fn stacks_of(pid: libc::pid_t) -> String {
    let out = std::process::Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-nx",
            "-ex",
            "thread apply all bt",
        ])
        .output();
    match out {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with('#') || l.starts_with("Thread"))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(_) => "(no gdb: no stacks)".to_owned(),
    }
}

#[test]
#[cfg_attr(
    hakmem_sanitizer,
    ignore = "AddressSanitizer's own allocator can deadlock a child forked while another thread \
              holds its quarantine lock (google/sanitizers#774); runs natively and under memcheck"
)]
fn fork_while_other_threads_allocate() {
    let stop = Arc::new(AtomicBool::new(false));
    let pause = Arc::new(AtomicBool::new(false));
    let churned = Arc::new(AtomicU64::new(0));
    // Blocks the churners hand to the forking thread (never touched in a child: a churner may
    // hold the lock when the fork happens).
    let handoff: Arc<Mutex<Vec<Handed>>> = Arc::default();
    let churners: Vec<_> = (0..CHURNERS)
        .map(|t| {
            let (stop, pause) = (Arc::clone(&stop), Arc::clone(&pause));
            let churned = Arc::clone(&churned);
            let handoff = Arc::clone(&handoff);
            thread::spawn(move || {
                let mut rng = Rng::new(t as u64);
                let mut live: Vec<(*mut u8, Layout, u64)> = Vec::new();
                let mut id = (t as u64) << 40;
                while !stop.load(Ordering::Relaxed) {
                    if pause.load(Ordering::Relaxed) {
                        // Between operations, never inside the allocator: the child runs.
                        thread::sleep(Duration::from_micros(200));
                        continue;
                    }
                    if live.len() < 32 && rng.below(2) == 0 {
                        let size = SIZES[rng.below(SIZES.len())];
                        let layout = Layout::from_size_align(size, 8 << rng.below(3)).unwrap();
                        // SAFETY: a valid layout with a non-zero size.
                        let p = unsafe { GLOBAL.alloc(layout) };
                        assert!(!p.is_null());
                        id += 1;
                        // SAFETY: `p` holds `size` bytes.
                        unsafe { pattern::fill(p, size, id) };
                        live.push((p, layout, id));
                    } else if !live.is_empty() && rng.below(8) == 0 {
                        let (p, layout, id) = live.swap_remove(rng.below(live.len()));
                        let mut handed = handoff.lock().unwrap();
                        if handed.len() < 16 {
                            handed.push((p as usize, layout, id));
                        } else {
                            live.push((p, layout, id));
                        }
                    } else if !live.is_empty() {
                        let (p, layout, id) = live.swap_remove(rng.below(live.len()));
                        // SAFETY: a live block of GLOBAL with this layout, freed once.
                        unsafe {
                            pattern::check(p, layout.size(), id, layout.size()).unwrap();
                            GLOBAL.dealloc(p, layout);
                        }
                    }
                    churned.fetch_add(1, Ordering::Relaxed);
                }
                for (p, layout, id) in live {
                    // SAFETY: as above.
                    unsafe {
                        pattern::check(p, layout.size(), id, layout.size()).unwrap();
                        GLOBAL.dealloc(p, layout);
                    }
                }
            })
        })
        .collect();
    let forks = scaled(FORKS);
    let mut failures = Vec::new();
    let mut handed_total = 0;
    for i in 0..forks {
        // Let the churners run (they are inside the allocator most of the time), then fork.
        pause.store(false, Ordering::Relaxed);
        let before = churned.load(Ordering::Relaxed);
        while churned.load(Ordering::Relaxed) < before + 50 {
            thread::yield_now();
        }
        let handed = std::mem::take(&mut *handoff.lock().unwrap());
        handed_total += handed.len();
        // SAFETY: the child only runs `child` (which allocates through hakmem and may spawn a
        // thread) and leaves with `_exit`, never returning into the test harness.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = child(i * 3, &handed);
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) };
        }
        assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
        // While the child runs, the churners wait between operations: it has the CPUs.
        pause.store(true, Ordering::Relaxed);
        match wait_with_timeout(pid, CHILD_TIMEOUT) {
            Ok(0) => {}
            Ok(code) => failures.push(format!("child {i} exited with {code}")),
            Err(e) => failures.push(format!("child {i}: {e}")),
        }
        // The parent's copies are still live: freed here, by a thread that did not allocate
        // them either.
        free_handed(&handed).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for t in churners {
        t.join().expect("churner");
    }
    free_handed(&std::mem::take(&mut *handoff.lock().unwrap())).unwrap();
    assert!(failures.is_empty(), "{failures:#?}");
    println!(
        "fork ({}): {forks} children, {} operations in the parent meanwhile, {handed_total} \
         blocks of other threads freed in the children",
        GLOBAL.stats().policy,
        churned.load(Ordering::Relaxed)
    );
}

/// The watchdog the fork test relies on: a child that never finishes is reported and killed.
#[test]
fn a_hung_child_is_reported() {
    // SAFETY: the child only sleeps until it is killed.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        loop {
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
        }
    }
    assert!(pid > 0);
    let err = wait_with_timeout(pid, Duration::from_millis(200)).unwrap_err();
    assert!(err.contains("deadlocked"), "{err}");
}
