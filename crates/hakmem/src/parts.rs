//! Which components an [`Allocator<P>`](crate::Allocator) holds: chosen by type, so that a
//! component a policy leaves out takes no memory at all, not merely no instructions.
//!
//! A [`Config`](crate::Config) says what a mode *does*; its [`Parts`] say what the allocator
//! *has*. The pair is jemalloc's `config_*` (what is built in) beside `opt_*` (what is in
//! effect): every component a configuration turns on must be present, which
//! [`Allocator::new`](crate::Allocator::new) checks at compile time
//! ([`Policy::CONFIG`](crate::Policy::CONFIG)); a present component the configuration leaves off
//! costs its memory and nothing else. [`mode::Runtime`](crate::mode::Runtime) holds [`All`],
//! since its mode is known only at run time.
//!
//! | parts | BigCache | batch | learner | site profile | pool | counters | `size_of` |
//! |---|---|---|---|---|---|---|---|
//! | [`Minimal`] | – | – | – | – | – | – | a few bytes |
//! | [`Fast`] | ✓ | ✓ | – | – | ✓ | – | ≈ 260 KiB |
//! | [`Balanced`] | ✓ | ✓ | – | – | ✓ | ✓ | ≈ 264 KiB |
//! | [`Learning`] | ✓ | ✓ | ✓ | – | ✓ | ✓ | ≈ 269 KiB |
//! | [`Research`] | ✓ | ✓ | ✓ | ✓ | ✓ | ✓ | ≈ 283 KiB |
//! | [`All`] | ✓ | ✓ | ✓ | ✓ | ✓ | ✓ | ≈ 283 KiB |
//!
//! (BigCache's slot table is most of it; `cargo test -p hakmem --test parts -- --nocapture`
//! prints the exact sizes, docs/design.md lists them.)
//!
//! A custom policy names its parts: one of these bundles, or its own:
//!
//! ```
//! use hakmem::parts::{Off, On, Parts};
//! use hakmem::{Allocator, Config, Policy};
//!
//! /// BigCache and the batch, nothing else.
//! struct CacheOnly;
//! impl Parts for CacheOnly {
//!     type BigCache = On;
//!     type Batch = On;
//!     type Learner = Off;
//!     type Sites = Off;
//!     type Pool = Off;
//!     type Counters = Off;
//! }
//!
//! /// FAST without the pool: small requests go to the system allocator.
//! struct FastNoPool;
//! impl Policy for FastNoPool {
//!     const NAME: &'static str = "fast-no-pool";
//!     type Parts = CacheOnly;
//!     const CONFIG: Config = Config { pool: false, ..Config::FAST };
//! }
//!
//! static A: Allocator<FastNoPool> = Allocator::new();
//! assert!(core::mem::size_of_val(&A) < core::mem::size_of::<Allocator<hakmem::mode::Fast>>());
//! ```

use crate::batch::Batch;
use crate::bigcache::BigCache;
use crate::learner::Learner;
use crate::pool::Pool;
use crate::site::Profile;
use crate::stats::Counters;

/// The components an allocator holds, one [`Switch`] each. See the [module docs](self).
pub trait Parts: 'static {
    /// BigCache: freed large blocks kept per call site and size class (`Config::bigcache`).
    type BigCache: Switch;
    /// The batch of releases to the OS (`Config::batch_madvise`).
    type Batch: Switch;
    /// The threshold learner (`Config::evolution` that learns).
    type Learner: Switch;
    /// The per-site profile (`StatsLevel::PerSite`).
    type Sites: Switch;
    /// The small-object pool (`Config::pool`).
    type Pool: Switch;
    /// The event counters (any `StatsLevel` above `None`).
    type Counters: Switch;
}

/// A component is present: [`On`], or absent: [`Off`]. Sealed: these two are all there is.
pub trait Switch: slot::Sealed + 'static {
    /// Whether the component is present.
    const ON: bool;
    /// What the allocator holds for a component `T`: `T` itself, or nothing.
    #[doc(hidden)]
    type Slot<T: slot::Component>: slot::Slot<T>;
}

/// The component is present.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct On;

/// The component is absent: it takes no memory, and the code that would use it is not compiled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Off;

impl Switch for On {
    const ON: bool = true;
    type Slot<T: slot::Component> = slot::Present<T>;
}

impl Switch for Off {
    const ON: bool = false;
    type Slot<T: slot::Component> = slot::Absent;
}

macro_rules! bundle {
    ($(#[$doc:meta])* $name:ident: $cache:ident, $batch:ident, $learner:ident, $sites:ident,
     $pool:ident, $counters:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name;

        impl Parts for $name {
            type BigCache = $cache;
            type Batch = $batch;
            type Learner = $learner;
            type Sites = $sites;
            type Pool = $pool;
            type Counters = $counters;
        }
    };
}

bundle!(
    /// MINIMAL's: none.
    Minimal: Off, Off, Off, Off, Off, Off
);
bundle!(
    /// FAST's: BigCache, the batch and the pool.
    Fast: On, On, Off, Off, On, Off
);
bundle!(
    /// BALANCED's: FAST's and the counters.
    Balanced: On, On, Off, Off, On, On
);
bundle!(
    /// LEARNING's: BALANCED's and the learner.
    Learning: On, On, On, Off, On, On
);
bundle!(
    /// RESEARCH's: LEARNING's and the per-site profile.
    Research: On, On, On, On, On, On
);
bundle!(
    /// Every component: for a policy whose configuration is chosen at run time
    /// ([`mode::Runtime`](crate::mode::Runtime)), or a custom one that need not be lean.
    All: On, On, On, On, On, On
);

/// The slot types behind [`Switch`] (reachable by no user: they name the crate's private
/// component types).
pub(crate) mod slot {
    use super::*;

    /// Seals [`Switch`](super::Switch).
    pub trait Sealed {}
    impl Sealed for super::On {}
    impl Sealed for super::Off {}

    /// A component type: built in a `const` context (allocators live in statics) and shared
    /// between threads.
    pub trait Component: Send + Sync + 'static {
        /// The empty component.
        const NEW: Self;
    }

    /// Holds a component `T`, or nothing.
    pub trait Slot<T>: Send + Sync {
        /// The empty slot.
        const NEW: Self;
        /// The component, if present. A constant for each slot type, so `if let Some(c) =
        /// slot.get()` compiles to nothing or to its body.
        fn get(&self) -> Option<&T>;

        /// The component, if present and `on` (the configuration turns it on).
        #[inline(always)]
        fn when(&self, on: bool) -> Option<&T> {
            if on {
                self.get()
            } else {
                None
            }
        }
    }

    /// A present component.
    pub struct Present<T>(T);

    /// An absent component: zero bytes.
    pub struct Absent;

    impl<T: Component> Slot<T> for Present<T> {
        const NEW: Self = Present(T::NEW);
        #[inline(always)]
        fn get(&self) -> Option<&T> {
            Some(&self.0)
        }
    }

    impl<T> Slot<T> for Absent {
        const NEW: Self = Absent;
        #[inline(always)]
        fn get(&self) -> Option<&T> {
            None
        }
    }

    impl Component for BigCache {
        const NEW: Self = BigCache::new();
    }
    impl Component for Batch {
        const NEW: Self = Batch::new();
    }
    impl Component for Learner {
        const NEW: Self = Learner::new();
    }
    impl Component for Profile {
        const NEW: Self = Profile::new();
    }
    impl Component for Pool {
        const NEW: Self = Pool::new();
    }
    impl Component for Counters {
        const NEW: Self = Counters::new();
    }
}

/// The slot of component `T` under switch `S`.
pub(crate) type SlotOf<S, T> = <S as Switch>::Slot<T>;
