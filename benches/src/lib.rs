//! Benchmarks and measurement probes for hakmem. The probes are binaries (`src/bin`); the
//! instruction-count and wall-clock benches join them as their issues land.
