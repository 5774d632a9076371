//! # hakmem
//!
//! A research memory allocator whose modes are cargo features. Every allocation is routed by
//! size: below the mmap threshold to the small-object path (the system allocator behind a
//! 16-byte header, or hakmem's own pool), at or above it to `mmap`, with freed large blocks kept
//! per call site (BigCache), the threshold learned with Elo ratings under a LEARN → CANARY →
//! FROZEN lifecycle, releases batched and huge pages advised.
//!
//! The hot path is written once, in [`Allocator<P>`], against a [`Policy`]. Each of the five
//! modes is a policy type in [`mode`] whose [`Config`] is a constant and whose [`parts`] hold
//! only the components it uses, so for a compiled mode a disabled feature costs zero
//! instructions and zero bytes. [`mode::Runtime`] runs the same code with the mode read from
//! `HAKMEM_MODE`, paying a load, a compare and a branch per decision (and, being larger, entry
//! points the compiler does not inline: `cargo xtask icount` measures the difference).
//!
//! ## Use
//!
//! ```toml
//! [dependencies]
//! hakmem = { version = "0.1", default-features = false, features = ["fast"] }
//! ```
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: hakmem::Hakmem = hakmem::Hakmem::new();
//!
//! fn main() {
//!     let v: Vec<u8> = vec![0; 4 << 20]; // a large block: mmap-backed
//!     println!("{}", GLOBAL.stats());
//! }
//! ```
//!
//! ## Features
//!
//! `minimal`, `fast`, `balanced` (default), `learning`, `research` and `runtime` each select
//! the policy behind [`Hakmem`]. All policy types exist in every build; the features only pick
//! the alias. If several are enabled (cargo unions features across a dependency graph), the
//! first of `runtime`, `research`, `learning`, `fast`, `minimal`, `balanced` wins, so any
//! explicitly chosen mode beats the default. With none of them, `Hakmem` is BALANCED.
//!
//! ## Rules the allocator keeps
//!
//! It never allocates through itself (the crate is `no_std`; `std` is linked for
//! `thread_local!` and the learner's floating-point functions, none of which allocates, and
//! debug builds abort on re-entry), never panics across [`GlobalAlloc`] (failures are
//! null; misuse detected by a header check ends the process with a one-line message written by
//! `write(2)`), and keeps its global state in atomics. It is silent: nothing reaches stderr
//! unless asked (`HAKMEM_LOG` or a policy's [`LogOutput`] for the learner's log,
//! [`Allocator::report_at_exit`] with `HAKMEM_REPORT=1` for the report), misuse aborts aside.
//! It keeps glibc's `errno` contract: a failed allocation leaves `ENOMEM`, nothing else
//! changes `errno`.
//!
//! [`GlobalAlloc`]: core::alloc::GlobalAlloc

#![no_std]
#![deny(unsafe_op_in_unsafe_fn, missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

// `thread_local!` (the re-entry guard, the pool's and the learner's per-thread state) and
// `f64` functions (`powf`, `sqrt`, `ln`, …) for the learner: nothing here allocates.
extern crate std;

mod allocator;
mod batch;
mod bigcache;
mod diag;
mod elo;
mod evolution;
mod header;
mod learner;
mod os;
mod p2;
pub mod parts;
mod policy;
mod pool;
mod reentry;
mod report;
mod runtime;
mod site;
mod stats;
mod system;
mod tls;

pub use allocator::Allocator;
pub use policy::{
    mode, Config, ConfigError, Evolution, FreePolicy, LogLevel, LogOutput, Mode, Policy,
    StatsLevel, Thp, FROZEN_BEST_THRESHOLD,
};
pub use site::{Site, SiteKey, SiteStat, SITE_SLOTS};
pub use stats::{Candidate, Lifecycle, Stats, Transitions};

cfg_if::cfg_if! {
    if #[cfg(feature = "runtime")] {
        /// The policy selected by cargo feature: `runtime`.
        pub type Selected = mode::Runtime;
    } else if #[cfg(feature = "research")] {
        /// The policy selected by cargo feature: `research`.
        pub type Selected = mode::Research;
    } else if #[cfg(feature = "learning")] {
        /// The policy selected by cargo feature: `learning`.
        pub type Selected = mode::Learning;
    } else if #[cfg(feature = "fast")] {
        /// The policy selected by cargo feature: `fast`.
        pub type Selected = mode::Fast;
    } else if #[cfg(feature = "minimal")] {
        /// The policy selected by cargo feature: `minimal`.
        pub type Selected = mode::Minimal;
    } else {
        /// The policy selected by cargo feature: `balanced` (the default).
        pub type Selected = mode::Balanced;
    }
}

/// The allocator of the mode chosen by cargo feature (see [`Selected`] and the crate docs).
pub type Hakmem = Allocator<Selected>;
