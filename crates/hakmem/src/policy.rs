//! Policies: every decision of the mode matrix (SPEC §3) as one [`Config`], and the [`Policy`]
//! trait that hands it to the hot path.
//!
//! A compiled mode's [`Policy::config`] returns a reference to a `const` [`Config`]; after
//! inlining, every `if cfg.feature { … }` in the hot path is decided at compile time and a
//! disabled feature leaves no instruction behind. [`mode::Runtime`] returns the entry of the mode
//! named by `HAKMEM_MODE`, so the very same hot path pays one load and one branch per decision:
//! the flag-check variant of the C original, kept so the difference stays measurable.

use core::fmt;

/// The decisions a mode makes, one field per row of the mode matrix (SPEC §3).
///
/// The five built-in modes are the constants [`Config::MINIMAL`], [`Config::FAST`],
/// [`Config::BALANCED`], [`Config::LEARNING`] and [`Config::RESEARCH`]. A custom policy starts
/// from one of them with struct-update syntax (see [`Policy`]). This crate is pre-1.0: fields may
/// be added, so always write `..Config::SOMETHING` when building one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The mode this configuration belongs to (for reports; it decides nothing by itself).
    pub mode: Mode,
    /// Requests of at least this many bytes are served by `mmap`, smaller ones by the
    /// small-object path. Fixed unless [`Config::evolution`] learns, in which case learning
    /// starts from the largest candidate threshold not above it (docs/learning.md).
    pub threshold: usize,
    /// Whether and how the threshold is learned (the evolution lifecycle).
    pub evolution: Evolution,
    /// Keep freed large blocks per call site and size class for reuse (BigCache).
    pub bigcache: bool,
    /// The most bytes BigCache may hold (mapping lengths, header pages included); a freed block
    /// that would exceed it is released instead.
    pub bigcache_bytes: usize,
    /// Collect released large blocks and return them to the OS in batches.
    pub batch_madvise: bool,
    /// Serve small requests from hakmem's own thread-local pool instead of the system allocator.
    pub pool: bool,
    /// What happens to a freed large block that is not kept in the cache.
    pub free_policy: FreePolicy,
    /// Transparent-huge-page advice for mmap-backed blocks, and (unless `Off`) for the pool's
    /// span area.
    pub thp: Thp,
    /// Which statistics are counted.
    pub stats: StatsLevel,
    /// How much the learner logs when logging is on ([`Config::log_output`]).
    pub log: LogLevel,
    /// Where log lines go unless the environment variable `HAKMEM_LOG` says otherwise. The
    /// built-in modes say [`LogOutput::WhenAsked`]: an allocator is silent on a program's stderr
    /// unless asked (misuse aborts aside).
    pub log_output: LogOutput,
    /// Fill freed and fresh (non-zeroed) small blocks — system blocks below 512 KiB — with a
    /// pattern, to make use-after-free and uninitialised reads visible. Header checks themselves
    /// are always on.
    pub poison: bool,
}

impl Config {
    /// MINIMAL: the system allocator plus a header; large blocks mapped and unmapped each time.
    /// The baseline every other mode is measured against.
    pub const MINIMAL: Config = Config {
        mode: Mode::Minimal,
        threshold: 2 << 20,
        evolution: Evolution::Off,
        bigcache: false,
        bigcache_bytes: 0,
        batch_madvise: false,
        pool: false,
        free_policy: FreePolicy::Immediate,
        thp: Thp::Off,
        stats: StatsLevel::None,
        log: LogLevel::Off,
        log_output: LogOutput::WhenAsked,
        poison: false,
    };

    /// FAST: the fastest production mode; a fixed threshold, caches on, no statistics.
    pub const FAST: Config = Config {
        mode: Mode::Fast,
        threshold: FROZEN_BEST_THRESHOLD,
        evolution: Evolution::Frozen,
        bigcache: true,
        bigcache_bytes: 256 << 20,
        batch_madvise: true,
        pool: true,
        free_policy: FreePolicy::Adaptive,
        thp: Thp::Auto,
        stats: StatsLevel::None,
        log: LogLevel::Off,
        log_output: LogOutput::WhenAsked,
        poison: false,
    };

    /// BALANCED (the default): FAST's speed with bounded memory and cheap counters.
    pub const BALANCED: Config = Config {
        mode: Mode::Balanced,
        bigcache_bytes: 64 << 20,
        stats: StatsLevel::Counters,
        ..Config::FAST
    };

    /// LEARNING: learns the mmap threshold, then freezes it; small requests go to the system.
    pub const LEARNING: Config = Config {
        mode: Mode::Learning,
        threshold: 2 << 20,
        evolution: Evolution::LearnThenFreeze,
        bigcache_bytes: 64 << 20,
        pool: false,
        stats: StatsLevel::Full,
        log: LogLevel::Lifecycle,
        ..Config::FAST
    };

    /// RESEARCH: everything on, learning never stops; for studying the allocator itself.
    pub const RESEARCH: Config = Config {
        mode: Mode::Research,
        evolution: Evolution::LearnForever,
        thp: Thp::On,
        stats: StatsLevel::PerSite,
        log: LogLevel::Verbose,
        poison: true,
        ..Config::LEARNING
    };
}

/// The threshold FAST and BALANCED freeze on: the smallest BigCache size class, so that every
/// block the cache can hold is mmap-backed, cached under its byte cap. The learner finds no single
/// better value — it froze on 748 KiB and on 22 MiB on the two workloads of docs/learning.md —
/// and what it prefers glibc for, glibc's retained heap, is memory it does not charge
/// (docs/design.md, "Decisions").
pub const FROZEN_BEST_THRESHOLD: usize = 512 << 10;

/// One of the five modes of SPEC §3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Mode {
    /// See [`Config::MINIMAL`].
    Minimal = 1,
    /// See [`Config::FAST`].
    Fast = 2,
    /// See [`Config::BALANCED`].
    Balanced = 3,
    /// See [`Config::LEARNING`].
    Learning = 4,
    /// See [`Config::RESEARCH`].
    Research = 5,
}

impl Mode {
    /// All modes, in the order of the mode matrix.
    pub const ALL: [Mode; 5] = [
        Mode::Minimal,
        Mode::Fast,
        Mode::Balanced,
        Mode::Learning,
        Mode::Research,
    ];

    /// The mode's lower-case name, as accepted by `HAKMEM_MODE` and used as its cargo feature.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Minimal => "minimal",
            Mode::Fast => "fast",
            Mode::Balanced => "balanced",
            Mode::Learning => "learning",
            Mode::Research => "research",
        }
    }

    /// The mode's built-in configuration.
    #[inline(always)]
    pub const fn config(self) -> &'static Config {
        match self {
            Mode::Minimal => &Config::MINIMAL,
            Mode::Fast => &Config::FAST,
            Mode::Balanced => &Config::BALANCED,
            Mode::Learning => &Config::LEARNING,
            Mode::Research => &Config::RESEARCH,
        }
    }

    /// Parses a mode name, ignoring ASCII case. Never allocates.
    ///
    /// ```
    /// use hakmem::Mode;
    /// assert_eq!(Mode::parse(b"Fast"), Some(Mode::Fast));
    /// assert_eq!(Mode::parse(b"turbo"), None);
    /// ```
    pub fn parse(name: &[u8]) -> Option<Mode> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name().as_bytes().eq_ignore_ascii_case(name))
    }

    /// Inverse of `self as u8`.
    pub(crate) const fn from_code(code: u8) -> Option<Mode> {
        match code {
            1 => Some(Mode::Minimal),
            2 => Some(Mode::Fast),
            3 => Some(Mode::Balanced),
            4 => Some(Mode::Learning),
            5 => Some(Mode::Research),
            _ => None,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the mmap threshold is chosen over time (the evolution lifecycle).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evolution {
    /// No lifecycle: the threshold is fixed ([`Lifecycle::Off`](crate::Lifecycle::Off)).
    Off,
    /// The threshold is fixed at a known-good value and reported as FROZEN.
    Frozen,
    /// LEARN, then FROZEN once the ratings converge (back to LEARN if the workload shifts).
    LearnThenFreeze,
    /// LEARN forever: never freezes.
    LearnForever,
}

impl Evolution {
    /// Whether the threshold is learned at run time (and so read from the instance).
    #[inline(always)]
    pub const fn learns(self) -> bool {
        matches!(self, Evolution::LearnThenFreeze | Evolution::LearnForever)
    }
}

/// What happens to a freed large block that is not kept in the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreePolicy {
    /// Return it to the OS at once (`munmap`).
    Immediate,
    /// Keep, `MADV_FREE` or batch-release it depending on the recent reuse of its size class.
    Adaptive,
}

/// Transparent-huge-page advice for mmap-backed blocks. Under `Auto` and `On` the pool (where
/// the policy has one) also advises its span area, which it commits in 2 MiB-aligned 4 MiB
/// chunks: fewer page faults for more resident memory (docs/pool.md, "Memory").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Thp {
    /// Never advise.
    Off,
    /// Advise `MADV_HUGEPAGE` on blocks of at least 2 MiB (and the pool's span area).
    Auto,
    /// Advise `MADV_HUGEPAGE` on every mmap-backed block (and the pool's span area).
    On,
}

/// Which statistics are counted. Levels are cumulative.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StatsLevel {
    /// Nothing is counted; [`Allocator::stats`](crate::Allocator::stats) reports zeros.
    None,
    /// Only the large-block path (mmap, cache, madvise, THP): rare, expensive events, so the
    /// small-object hot path carries no shared counter.
    Counters,
    /// Every allocation and free on every path.
    Full,
    /// [`StatsLevel::Full`] plus a per-call-site profile.
    PerSite,
}

/// How much is logged while running, when logging is on (see [`LogOutput`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Nothing (fatal errors are always reported).
    Off,
    /// One line per lifecycle transition.
    Lifecycle,
    /// Lifecycle transitions plus learning decisions.
    Verbose,
}

/// Where log lines go ([`Config::log_output`]), unless `HAKMEM_LOG` says otherwise.
///
/// `HAKMEM_LOG` is read once per process, with `getenv`, at the first line to log:
///
/// | `HAKMEM_LOG` | lines go to |
/// |---|---|
/// | unset or empty | the policy's [`LogOutput`] |
/// | `0` | nowhere |
/// | `1` or `stderr` | stderr |
/// | anything else | the file it names, appended to (created `0644` if need be) |
///
/// A file that cannot be opened costs one warning line on stderr (the program asked for a log);
/// logging is then off. Fatal misuse reports always go to stderr. docs/preload.md has examples.
///
/// A custom policy that wants its log without the variable:
///
/// ```
/// use hakmem::{Config, LogOutput, Policy};
///
/// struct LoudLearning;
/// impl Policy for LoudLearning {
///     const NAME: &'static str = "loud-learning";
///     fn config() -> &'static Config {
///         const C: Config = Config { log_output: LogOutput::Stderr, ..Config::LEARNING };
///         &C
///     }
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogOutput {
    /// Nowhere unless `HAKMEM_LOG` asks (the built-in modes).
    WhenAsked,
    /// To stderr unless `HAKMEM_LOG` says otherwise.
    Stderr,
}

/// A mode's decisions, handed to the one generic hot path of [`Allocator`](crate::Allocator).
///
/// The built-in policies are the types of [`mode`]. A policy is a type with a [`Config`]; a
/// researcher can define a variant of a mode in a few lines, and it gets the same compiled,
/// zero-overhead hot path:
///
/// ```
/// use hakmem::{Allocator, Config, Policy, Thp};
///
/// /// BALANCED with huge pages advised on every mmap block.
/// struct HugeBalanced;
/// impl Policy for HugeBalanced {
///     const NAME: &'static str = "huge-balanced";
///     fn config() -> &'static Config {
///         const C: Config = Config { thp: Thp::On, ..Config::BALANCED };
///         &C
///     }
/// }
///
/// static A: Allocator<HugeBalanced> = Allocator::new();
/// let layout = core::alloc::Layout::from_size_align(4 << 20, 8).unwrap();
/// unsafe {
///     use core::alloc::GlobalAlloc;
///     let p = A.alloc(layout);
///     assert!(!p.is_null());
///     A.dealloc(p, layout);
/// }
/// ```
///
/// `config` runs on every allocation and free: it must be cheap, must not allocate, and must
/// keep returning the same configuration (blocks are freed by the path their header names, so a
/// changing configuration is safe, but the statistics would not mean much).
pub trait Policy: Send + Sync + 'static {
    /// A short name for reports ("minimal", "runtime", …).
    const NAME: &'static str;

    /// This policy's decisions. For a compiled mode this returns a constant and inlines away.
    fn config() -> &'static Config;
}

/// The built-in policies: the five compiled modes and the [`Runtime`](mode::Runtime) twin.
pub mod mode {
    use super::{Config, Mode, Policy};

    macro_rules! compiled_mode {
        ($(#[$doc:meta])* $ty:ident, $cfg:ident, $name:literal) => {
            $(#[$doc])*
            #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
            pub struct $ty;

            impl Policy for $ty {
                const NAME: &'static str = $name;
                #[inline(always)]
                fn config() -> &'static Config {
                    &Config::$cfg
                }
            }
        };
    }

    compiled_mode!(
        /// The MINIMAL mode, compiled ([`Config::MINIMAL`]).
        Minimal, MINIMAL, "minimal"
    );
    compiled_mode!(
        /// The FAST mode, compiled ([`Config::FAST`]).
        Fast, FAST, "fast"
    );
    compiled_mode!(
        /// The BALANCED mode, compiled ([`Config::BALANCED`]).
        Balanced, BALANCED, "balanced"
    );
    compiled_mode!(
        /// The LEARNING mode, compiled ([`Config::LEARNING`]).
        Learning, LEARNING, "learning"
    );
    compiled_mode!(
        /// The RESEARCH mode, compiled ([`Config::RESEARCH`]).
        Research, RESEARCH, "research"
    );

    /// The mode named by the environment variable `HAKMEM_MODE`, checked at run time.
    ///
    /// `HAKMEM_MODE` (`minimal`, `fast`, `balanced`, `learning` or `research`, any case) is read
    /// once per process, lazily, on the first allocation of any `Allocator<Runtime>`, with
    /// `getenv` (nothing is allocated). Unset or empty means `balanced`; any other value prints
    /// one warning line on stderr and falls back to `balanced`.
    ///
    /// It runs exactly the code of the compiled modes, but every decision costs a load and a
    /// branch: this is the flag-check design of the C original, kept so that its cost stays
    /// measurable against the compiled modes.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Runtime;

    impl Runtime {
        /// The mode in effect, reading `HAKMEM_MODE` if that has not happened yet.
        pub fn mode() -> Mode {
            crate::runtime::mode()
        }

        /// The mode in effect if `HAKMEM_MODE` has been read already, without reading it.
        ///
        /// Useful to check that a code path never consulted the runtime configuration: only
        /// `Allocator<Runtime>` (and [`Runtime::mode`]) read it.
        pub fn peek() -> Option<Mode> {
            crate::runtime::peek()
        }
    }

    impl Policy for Runtime {
        const NAME: &'static str = "runtime";
        #[inline(always)]
        fn config() -> &'static Config {
            crate::runtime::mode().config()
        }
    }
}
