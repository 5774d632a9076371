//! Policies: every decision of the mode matrix (SPEC §3) as one [`Config`], and the [`Policy`]
//! trait that hands it to the hot path.
//!
//! A compiled mode's [`Policy::config`] returns a reference to a `const` [`Config`]; after
//! inlining, every `if cfg.feature { … }` in the hot path is decided at compile time and a
//! disabled feature leaves no instruction behind. [`mode::Runtime`] returns the entry of the mode
//! named by `HAKMEM_MODE`, so the very same hot path pays one load and one branch per decision:
//! the flag-check variant of the C original, kept so the difference stays measurable.

use core::fmt;

use crate::parts::{Parts, Switch};

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
    /// that would exceed it is released instead. It also bounds the classes: a request whose
    /// class's block would not fit is mapped at its own size and never cached.
    pub bigcache_bytes: usize,
    /// How long a block may sit in BigCache without being reused before it is released, in
    /// milliseconds (like jemalloc's `dirty_decay_ms`); 0: never by time, only by the cap.
    /// Checked on slow paths only (a cache miss, a pool refill), never on a cache hit: an idle
    /// program returns its large blocks once it allocates again, a busy one keeps what it
    /// reuses. docs/large-blocks.md says why each mode's default is what it is.
    pub bigcache_decay_ms: u32,
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
    /// Poisoning covers blocks below this size only: the small objects. Larger ones — which a
    /// learning mode's strategy may send to the system allocator — are left alone, so that
    /// what the learner measures is the strategy's cost, not the debugging's.
    pub poison_below: usize,
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
        bigcache_decay_ms: 0,
        batch_madvise: false,
        pool: false,
        free_policy: FreePolicy::Immediate,
        thp: Thp::Off,
        stats: StatsLevel::None,
        log: LogLevel::Off,
        log_output: LogOutput::WhenAsked,
        poison: false,
        poison_below: 512 << 10,
    };

    /// FAST: the fastest production mode; a fixed threshold, caches on, no statistics.
    pub const FAST: Config = Config {
        mode: Mode::Fast,
        threshold: FROZEN_BEST_THRESHOLD,
        evolution: Evolution::Frozen,
        bigcache: true,
        bigcache_bytes: 1 << 30,
        bigcache_decay_ms: 10_000,
        batch_madvise: true,
        pool: true,
        free_policy: FreePolicy::Adaptive,
        thp: Thp::Auto,
        stats: StatsLevel::None,
        log: LogLevel::Off,
        log_output: LogOutput::WhenAsked,
        poison: false,
        poison_below: 512 << 10,
    };

    /// BALANCED (the default): FAST's speed with bounded memory and cheap counters.
    pub const BALANCED: Config = Config {
        mode: Mode::Balanced,
        bigcache_bytes: 256 << 20,
        bigcache_decay_ms: 1_000,
        stats: StatsLevel::Counters,
        ..Config::FAST
    };

    /// LEARNING: BALANCED plus learning: learns the mmap threshold over the contested range
    /// (512 KiB and up), then freezes it; small requests go to the pool.
    pub const LEARNING: Config = Config {
        mode: Mode::Learning,
        evolution: Evolution::LearnThenFreeze,
        bigcache_bytes: Config::BALANCED.bigcache_bytes,
        bigcache_decay_ms: Config::BALANCED.bigcache_decay_ms,
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

    /// Checks that the configuration makes sense: `Err` names the first contradiction.
    /// [`Allocator::new`](crate::Allocator::new) runs it at compile time on every policy's
    /// [`Policy::CONFIG`], together with the check that the policy's [`Parts`] hold every
    /// component the configuration uses, so a policy that fails does not build.
    ///
    /// ```
    /// use hakmem::{Config, ConfigError, FreePolicy};
    ///
    /// assert_eq!(Config::FAST.validate(), Ok(()));
    /// let c = Config { free_policy: FreePolicy::Immediate, ..Config::FAST };
    /// assert_eq!(c.validate(), Err(ConfigError::BatchNeedsAdaptive));
    /// ```
    pub const fn validate(&self) -> Result<(), ConfigError> {
        if self.batch_madvise && matches!(self.free_policy, FreePolicy::Immediate) {
            return Err(ConfigError::BatchNeedsAdaptive);
        }
        if self.bigcache && self.bigcache_bytes < crate::bigcache::SMALLEST_BLOCK {
            return Err(ConfigError::CacheTooSmall);
        }
        Ok(())
    }

    /// Whether parts `Pt` hold every component this configuration uses: `Err` names the first
    /// one missing. Checked at compile time with [`Config::validate`].
    pub const fn fits<Pt: Parts>(&self) -> Result<(), ConfigError> {
        let missing = if self.bigcache && !<Pt::BigCache as Switch>::ON {
            "the policy's Parts leave out BigCache, which `bigcache: true` uses"
        } else if self.batch_madvise && !<Pt::Batch as Switch>::ON {
            "the policy's Parts leave out the Batch, which `batch_madvise: true` uses"
        } else if self.evolution.learns() && !<Pt::Learner as Switch>::ON {
            "the policy's Parts leave out the Learner, which a learning `evolution` uses"
        } else if matches!(self.stats, StatsLevel::PerSite) && !<Pt::Sites as Switch>::ON {
            "the policy's Parts leave out the Sites profile, which `StatsLevel::PerSite` uses"
        } else if self.pool && !<Pt::Pool as Switch>::ON {
            "the policy's Parts leave out the Pool, which `pool: true` uses"
        } else if !matches!(self.stats, StatsLevel::None) && !<Pt::Counters as Switch>::ON {
            "the policy's Parts leave out the Counters, which a `stats` level above `None` uses"
        } else {
            return Ok(());
        };
        Err(ConfigError::MissingPart(missing))
    }
}

/// Why a [`Config`] was refused ([`Config::validate`], [`Config::fits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `batch_madvise` with [`FreePolicy::Immediate`]: the batch is how the adaptive policy
    /// releases; an immediate one never batches.
    BatchNeedsAdaptive,
    /// `bigcache` with a `bigcache_bytes` below the smallest cached block (its class's bytes
    /// plus the header page): the cache could never hold anything.
    CacheTooSmall,
    /// The configuration uses a component the policy's [`Parts`] leave out (the message names
    /// it).
    MissingPart(&'static str),
}

impl ConfigError {
    /// The error as one line (usable in `const` contexts, for a compile-time panic).
    pub const fn message(&self) -> &'static str {
        match self {
            ConfigError::BatchNeedsAdaptive => {
                "batch_madvise needs free_policy: FreePolicy::Adaptive (an immediate release \
                 never batches)"
            }
            ConfigError::CacheTooSmall => {
                "bigcache_bytes is below the smallest cached block (512 KiB + a header page): \
                 the cache could hold nothing"
            }
            ConfigError::MissingPart(missing) => missing,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// Panics — at compile time when evaluated in a `const` — unless `P`'s configuration is valid
/// and its parts hold what it uses.
pub(crate) const fn check<P: Policy>() {
    if let Err(e) = P::CONFIG.validate() {
        panic!("{}", e.message());
    }
    if let Err(e) = P::CONFIG.fits::<P::Parts>() {
        panic!("{}", e.message());
    }
}

// The built-in modes are valid, and every one fits `parts::All` (what `Runtime` holds).
const _: () = {
    let mut i = 0;
    while i < Mode::ALL.len() {
        let cfg = Mode::ALL[i].config();
        assert!(cfg.validate().is_ok());
        assert!(cfg.fits::<crate::parts::All>().is_ok());
        i += 1;
    }
};

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
/// use hakmem::{parts, Config, LogOutput, Policy};
///
/// struct LoudLearning;
/// impl Policy for LoudLearning {
///     const NAME: &'static str = "loud-learning";
///     type Parts = parts::Learning;
///     const CONFIG: Config = Config { log_output: LogOutput::Stderr, ..Config::LEARNING };
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
/// The built-in policies are the types of [`mode`]. A policy is a type with a [`Config`] (what
/// it does) and [`Parts`] (what the allocator holds for it); a researcher can define a variant
/// of a mode in a few lines, and it gets the same compiled, zero-overhead hot path:
///
/// ```
/// use hakmem::{parts, Allocator, Config, Policy, Thp};
///
/// /// BALANCED with huge pages advised on every mmap block.
/// struct HugeBalanced;
/// impl Policy for HugeBalanced {
///     const NAME: &'static str = "huge-balanced";
///     type Parts = parts::Balanced;
///     const CONFIG: Config = Config { thp: Thp::On, ..Config::BALANCED };
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
/// A policy that does not make sense does not build: [`Allocator::new`](crate::Allocator::new)
/// checks at compile time that [`Policy::CONFIG`] passes [`Config::validate`] and that
/// [`Policy::Parts`] hold every component it uses ([`Config::fits`]). This does not compile
/// (MINIMAL's parts hold no BigCache):
///
/// ```compile_fail
/// use hakmem::{parts, Allocator, Config, Policy};
///
/// struct Wrong;
/// impl Policy for Wrong {
///     const NAME: &'static str = "wrong";
///     type Parts = parts::Minimal;
///     const CONFIG: Config = Config::FAST;
/// }
/// static A: Allocator<Wrong> = Allocator::new();
/// ```
pub trait Policy: Send + Sync + 'static {
    /// A short name for reports ("minimal", "runtime", …).
    const NAME: &'static str;

    /// The components the allocator holds ([`parts`](crate::parts)): a component left out takes
    /// no memory.
    type Parts: Parts;

    /// The configuration, checked at compile time (see above).
    const CONFIG: Config;

    /// The configuration in effect, read on every allocation and free: [`Policy::CONFIG`]
    /// unless overridden. [`mode::Runtime`] overrides it to pick a built-in mode at run time;
    /// an override must be cheap, must not allocate, must keep returning the same
    /// configuration, and must return only configurations that are valid and fit
    /// [`Policy::Parts`] (a component the parts leave out is then simply off).
    #[inline(always)]
    fn config() -> &'static Config {
        const { &Self::CONFIG }
    }
}

/// The built-in policies: the five compiled modes and the [`Runtime`](mode::Runtime) twin.
pub mod mode {
    use super::{Config, Mode, Policy};
    use crate::parts;

    macro_rules! compiled_mode {
        ($(#[$doc:meta])* $ty:ident, $cfg:ident, $name:literal) => {
            $(#[$doc])*
            #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
            pub struct $ty;

            impl Policy for $ty {
                const NAME: &'static str = $name;
                type Parts = parts::$ty;
                const CONFIG: Config = Config::$cfg;
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
        type Parts = parts::All;
        /// The mode when `HAKMEM_MODE` is unset: BALANCED. ([`Runtime::config`] returns the
        /// mode in effect; every built-in mode fits [`parts::All`].)
        const CONFIG: Config = Config::BALANCED;
        #[inline(always)]
        fn config() -> &'static Config {
            crate::runtime::mode().config()
        }
    }
}
