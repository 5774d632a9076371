//! What each mode's allocator holds: a component its policy leaves out takes no memory
//! (`hakmem::parts`). `cargo test -p hakmem --test parts -- --nocapture` prints the sizes that
//! docs/design.md lists.

use std::mem::size_of;

use hakmem::parts::{self, Off, On, Parts, Switch};
use hakmem::{mode, Allocator, Config, ConfigError, FreePolicy, Mode, StatsLevel};

#[test]
fn a_mode_holds_only_what_it_uses() {
    let sizes = [
        ("minimal", size_of::<Allocator<mode::Minimal>>()),
        ("fast", size_of::<Allocator<mode::Fast>>()),
        ("balanced", size_of::<Allocator<mode::Balanced>>()),
        ("learning", size_of::<Allocator<mode::Learning>>()),
        ("research", size_of::<Allocator<mode::Research>>()),
        ("runtime", size_of::<Allocator<mode::Runtime>>()),
    ];
    println!("| policy | size_of::<Allocator<_>>() |\n|---|---:|");
    for (name, size) in sizes {
        println!("| {name} | {size} B |");
    }
    let size = |name| sizes.iter().find(|(n, _)| *n == name).unwrap().1;
    assert!(
        size("minimal") <= 4096,
        "MINIMAL holds {} B",
        size("minimal")
    );
    assert!(size("fast") < size("research"));
    assert!(size("balanced") < size("research"));
    assert!(size("learning") < size("research"));
    assert!(
        size("runtime") >= size("research"),
        "it holds every component"
    );
}

/// The parts each built-in mode's policy holds are exactly what its configuration uses: a
/// present component the mode never turns on would be memory for nothing.
#[test]
fn each_mode_holds_exactly_what_its_configuration_uses() {
    fn on<Pt: Parts>() -> [bool; 6] {
        [
            <Pt::BigCache as Switch>::ON,
            <Pt::Batch as Switch>::ON,
            <Pt::Learner as Switch>::ON,
            <Pt::Sites as Switch>::ON,
            <Pt::Pool as Switch>::ON,
            <Pt::Counters as Switch>::ON,
        ]
    }
    fn used(c: &Config) -> [bool; 6] {
        [
            c.bigcache,
            c.batch_madvise,
            c.evolution.learns(),
            c.stats == StatsLevel::PerSite,
            c.pool,
            c.stats != StatsLevel::None,
        ]
    }
    let held = [
        (Mode::Minimal, on::<parts::Minimal>()),
        (Mode::Fast, on::<parts::Fast>()),
        (Mode::Balanced, on::<parts::Balanced>()),
        (Mode::Learning, on::<parts::Learning>()),
        (Mode::Research, on::<parts::Research>()),
    ];
    for (mode, held) in held {
        assert_eq!(held, used(mode.config()), "{mode}");
    }
    assert_eq!(on::<parts::All>(), [true; 6]);
}

#[test]
fn a_configuration_that_makes_no_sense_is_refused() {
    for mode in Mode::ALL {
        assert_eq!(mode.config().validate(), Ok(()), "{mode}");
        assert_eq!(mode.config().fits::<parts::All>(), Ok(()), "{mode}");
    }
    let immediate = Config {
        free_policy: FreePolicy::Immediate,
        ..Config::FAST
    };
    assert_eq!(immediate.validate(), Err(ConfigError::BatchNeedsAdaptive));
    let empty_cache = Config {
        bigcache_bytes: 64 << 10,
        ..Config::BALANCED
    };
    assert_eq!(empty_cache.validate(), Err(ConfigError::CacheTooSmall));
    // Nothing held that is not used is fine; something used that is not held is not.
    assert_eq!(Config::MINIMAL.fits::<parts::Research>(), Ok(()));
    let err = Config::FAST.fits::<parts::Minimal>().unwrap_err();
    assert!(matches!(err, ConfigError::MissingPart(_)));
    assert!(err.to_string().contains("BigCache"), "{err}");

    struct NoCounters;
    impl Parts for NoCounters {
        type BigCache = On;
        type Batch = On;
        type Learner = Off;
        type Sites = Off;
        type Pool = On;
        type Counters = Off;
    }
    assert_eq!(Config::FAST.fits::<NoCounters>(), Ok(()));
    let err = Config::BALANCED.fits::<NoCounters>().unwrap_err();
    assert!(err.to_string().contains("Counters"), "{err}");
}
