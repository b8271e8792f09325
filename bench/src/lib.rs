//! Benchmarks of hwsign's hot paths. This library holds what both the criterion benches
//! (`cargo bench -p hwsign-bench`) and the `hwsign-bench` runner (`bench/run`) measure: one
//! realistic request, the signers compared (ring, p256, the hwsign pipeline, aws-sigv4's SigV4a)
//! and a verifier set up as a server would run it. The runner owns the processes (agent,
//! echo server, swtpm) and the ratios; see docs/PERFORMANCE.md.
#![forbid(unsafe_code)]

pub mod error;
pub mod fixtures;
pub mod signers;
pub mod sigv4a;
pub mod verify;

pub use error::BenchError;
