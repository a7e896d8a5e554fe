//! Benchmarks live in `benches/`; see `benches/sensor.rs` and `compare-flow-tools.sh`.
