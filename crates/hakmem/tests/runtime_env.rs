//! `HAKMEM_MODE`, as the `Runtime` policy reads it: once per process, lazily, any case, with one
//! warning line for a bad value. Each case runs in a child process (the variable is read once
//! per process), where several threads race to make the first allocation.

mod common;

use std::alloc::{GlobalAlloc, Layout};

use common::{child_value, hakmem_lines, run_child};
use hakmem::mode::Runtime;
use hakmem::Allocator;

/// The child: before any `Runtime` allocation the mode is unread; four threads allocate at once;
/// then it prints the mode in effect.
#[test]
#[ignore = "child process of the runtime_env tests"]
fn child_report_mode() {
    static A: Allocator<Runtime> = Allocator::new();
    assert_eq!(Runtime::peek(), None, "nothing read HAKMEM_MODE yet");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                let layout = Layout::from_size_align(64, 8).unwrap();
                // SAFETY: valid layout; freed at once.
                unsafe {
                    let p = A.alloc(layout);
                    assert!(!p.is_null());
                    A.dealloc(p, layout);
                }
                A.stats().mode
            })
        })
        .collect();
    let modes: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        modes.windows(2).all(|w| w[0] == w[1]),
        "threads disagree: {modes:?}"
    );
    println!("mode={}", modes[0]);
}

fn mode_for(value: Option<&str>) -> (String, Vec<String>) {
    let out = run_child("child_report_mode", &[("HAKMEM_MODE", value)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed for {value:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode =
        child_value(&out, "mode").unwrap_or_else(|| panic!("no mode for {value:?} in {stdout}"));
    (mode, hakmem_lines(&out))
}

#[test]
fn every_mode_name_in_any_case() {
    for (value, mode) in [
        ("minimal", "minimal"),
        ("FAST", "fast"),
        ("Balanced", "balanced"),
        ("lEaRnInG", "learning"),
        ("research", "research"),
    ] {
        let (got, warnings) = mode_for(Some(value));
        assert_eq!(got, mode, "HAKMEM_MODE={value}");
        assert!(
            warnings.is_empty(),
            "HAKMEM_MODE={value} warned: {warnings:?}"
        );
    }
}

#[test]
fn unset_or_empty_means_balanced_silently() {
    for value in [None, Some("")] {
        let (got, warnings) = mode_for(value);
        assert_eq!(got, "balanced", "HAKMEM_MODE={value:?}");
        assert!(
            warnings.is_empty(),
            "HAKMEM_MODE={value:?} warned: {warnings:?}"
        );
    }
}

#[test]
fn a_bad_value_warns_once_and_falls_back() {
    for value in ["turbo", "fast ", "minimal,fast", "\u{1b}[31mred"] {
        let (got, warnings) = mode_for(Some(value));
        assert_eq!(got, "balanced", "HAKMEM_MODE={value:?}");
        assert_eq!(
            warnings.len(),
            1,
            "exactly one warning for {value:?}: {warnings:?}"
        );
        let w = &warnings[0];
        for needle in [
            "HAKMEM_MODE",
            "minimal",
            "fast",
            "balanced",
            "learning",
            "research",
            "using balanced",
        ] {
            assert!(w.contains(needle), "warning lacks {needle:?}: {w}");
        }
        assert!(!w.contains('\u{1b}'), "control bytes are masked: {w:?}");
    }
}
