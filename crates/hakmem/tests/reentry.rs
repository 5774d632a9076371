//! Debug builds detect the allocator calling itself: a policy whose `config` allocates through
//! the global allocator (which is that very allocator) ends the process with a message instead
//! of recursing. Release builds compile the guard away, so this test is for debug builds.
#![cfg(debug_assertions)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use common::{hakmem_lines, run_child, signal};
use hakmem::{Allocator, Config, Policy};

static ARMED: AtomicBool = AtomicBool::new(false);

/// MINIMAL, except that once armed its `config` allocates: a bug of exactly the kind the guard
/// exists for.
struct Reentrant;

impl Policy for Reentrant {
    const NAME: &'static str = "reentrant";
    type Parts = hakmem::parts::Minimal;
    const CONFIG: Config = Config::MINIMAL;
    fn config() -> &'static Config {
        if ARMED.load(Ordering::Relaxed) {
            std::hint::black_box(Box::new(1u64));
        }
        &Config::MINIMAL
    }
}

#[global_allocator]
static GLOBAL: Allocator<Reentrant> = Allocator::new();

#[test]
#[ignore = "child process of reentry_is_detected"]
fn child_reenter() {
    let v = std::hint::black_box(vec![1u8; 100]); // fine: not armed
    ARMED.store(true, Ordering::Relaxed);
    let w = std::hint::black_box(vec![2u8; 100]); // config() allocates inside alloc: must abort
    ARMED.store(false, Ordering::Relaxed);
    println!("not detected: {}", v.len() + w.len());
}

#[test]
fn reentry_is_detected() {
    let out = run_child("child_reenter", &[]);
    assert_eq!(
        signal(&out),
        Some(libc::SIGABRT),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = hakmem_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("re-entrant call"), "{}", lines[0]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("not detected"));
}
