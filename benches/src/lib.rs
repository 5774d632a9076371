//! Benchmarks and measurement probes for hakmem. The probes are binaries (`src/bin`: `large`
//! for `cargo xtask large`, `bench` for `cargo xtask bench-matrix`); the instruction-count
//! benchmarks are iai-callgrind library benches (`benches/icount.rs`, run and checked by
//! `cargo xtask icount`).
