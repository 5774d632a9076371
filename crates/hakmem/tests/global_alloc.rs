//! `hakmem::Hakmem` as the `#[global_allocator]` of a real program: std collections, strings,
//! large buffers and threads that hand objects to each other. Run once per mode feature by
//! `cargo xtask test`, so every mode serves a whole test binary (the test harness included).

mod common;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use hakmem::{Hakmem, Lifecycle, Mode};

#[global_allocator]
static GLOBAL: Hakmem = Hakmem::new();

/// The mode the cargo features select, by the documented precedence.
fn expected_mode() -> Option<Mode> {
    if cfg!(feature = "runtime") {
        None // read from HAKMEM_MODE
    } else if cfg!(feature = "research") {
        Some(Mode::Research)
    } else if cfg!(feature = "learning") {
        Some(Mode::Learning)
    } else if cfg!(feature = "fast") {
        Some(Mode::Fast)
    } else if cfg!(feature = "minimal") {
        Some(Mode::Minimal)
    } else {
        Some(Mode::Balanced)
    }
}

#[test]
fn hakmem_alias_follows_the_features() {
    let stats = GLOBAL.stats();
    match expected_mode() {
        Some(mode) => {
            assert_eq!(stats.mode, mode);
            assert_eq!(stats.policy, mode.name());
        }
        None => {
            assert_eq!(stats.policy, "runtime");
            assert_eq!(Some(stats.mode), hakmem::mode::Runtime::peek());
        }
    }
    let lifecycles: &[Lifecycle] = match stats.mode {
        Mode::Minimal => &[Lifecycle::Off],
        Mode::Fast | Mode::Balanced => &[Lifecycle::Frozen],
        // LEARNING may have concluded already (the whole test binary allocates through it).
        Mode::Learning => &[Lifecycle::Learn, Lifecycle::Canary, Lifecycle::Frozen],
        Mode::Research => &[Lifecycle::Learn],
    };
    assert!(lifecycles.contains(&stats.lifecycle), "{stats}");
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Builds a mix of collections whose contents are derived from `seed`, and returns a digest.
fn workload(seed: u64) -> u64 {
    let mut map: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut tree = BTreeMap::new();
    let mut queue = VecDeque::new();
    let mut text = String::new();
    let mut x = seed | 1;
    // 3000 iterations (fewer at a lower HAKMEM_TEST_SCALE, as under valgrind, but at least two
    // large blocks).
    for i in 0..common::scaled(3000).max(200) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = match i % 100 {
            0 => 3 << 20,       // a large, mmap-backed block
            1..=4 => 200 << 10, // mid-sized
            _ => (x % 2000) as usize,
        };
        map.insert(i, vec![(x & 0xff) as u8; len]);
        tree.insert(x % 10_000, i.to_string());
        queue.push_back(Box::new([i; 8]));
        if queue.len() > 64 {
            queue.pop_front();
        }
        text.push_str(&format!("{x:x},"));
        if i % 3 == 0 {
            map.remove(&(i / 2));
        }
    }
    let mut keys: Vec<_> = map.keys().copied().collect();
    keys.sort_unstable();
    let mut digest = checksum(text.as_bytes());
    for k in keys {
        digest ^= checksum(&map[&k]).rotate_left((k % 64) as u32);
    }
    digest ^ tree.len() as u64 ^ queue.iter().map(|b| b[7]).sum::<u64>()
}

#[test]
fn collections_across_threads_match_a_single_thread() {
    let expected: Vec<u64> = (0..4).map(workload).collect();
    let handles: Vec<_> = (0..4)
        .map(|seed| thread::spawn(move || workload(seed)))
        .collect();
    let got: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(got, expected);
}

#[test]
fn objects_freed_by_another_thread() {
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let consumer = thread::spawn(move || {
        let mut total = 0usize;
        for v in rx {
            assert!(
                v.iter().all(|&b| b == (v.len() % 251) as u8),
                "corrupted in transit"
            );
            total += v.len();
        }
        total
    });
    let producers: Vec<_> = (0..3)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || {
                let mut sent = 0;
                for i in 0..400usize {
                    let len = if i % 50 == 0 {
                        (1 << 20) + t
                    } else {
                        1 + (i * 37 + t) % 5000
                    };
                    tx.send(vec![(len % 251) as u8; len]).unwrap();
                    sent += len;
                }
                sent
            })
        })
        .collect();
    drop(tx);
    let sent: usize = producers.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(consumer.join().unwrap(), sent);
}

#[test]
fn shared_state_and_growth() {
    let shared = Arc::new(Mutex::new(Vec::<String>::new()));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                for i in 0..500 {
                    shared.lock().unwrap().push(format!("{t}-{i}"));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut all = shared.lock().unwrap().clone();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 2000);

    // One vector grown from 1 KiB to 64 MiB by doubling: every realloc route (system, the
    // crossing of the threshold, mremap of large blocks).
    let mut v: Vec<u8> = (0..1024).map(|i| (i % 253) as u8).collect();
    // (64 MiB; at least 8 MiB at a lower HAKMEM_TEST_SCALE.)
    let target = (common::scaled(64 << 20) as usize).max(8 << 20);
    while v.len() < target {
        v.extend_from_within(..);
    }
    assert!(v
        .iter()
        .enumerate()
        .step_by(4099)
        .all(|(i, &b)| b == (i % 1024 % 253) as u8));
}

#[test]
fn statistics_follow_the_level() {
    let before = GLOBAL.stats();
    let big = vec![1u8; 8 << 20];
    drop(big);
    let after = GLOBAL.stats();
    // A large block: mapped afresh, or a block another test (running in parallel) left in
    // BigCache.
    let large = |s: &hakmem::Stats| s.mmap_allocs + s.bigcache_hits;
    match after.level {
        hakmem::StatsLevel::None => assert_eq!(large(&after), 0),
        _ => assert!(large(&after) > large(&before), "{after}"),
    }
    // The report is readable and names the mode.
    let report = after.to_string();
    assert!(
        report.contains(after.mode.name()) && report.contains("threshold"),
        "{report}"
    );
}
