//! Prometheus metrics in the text exposition format, written by hand.
//!
//! Three series families and a gauge do not need a metrics crate: the label values are a closed
//! set (the outcome and the wire code, both `&'static str` from [`RejectCode::as_str`]), so the
//! counter table cannot grow with traffic, and the histograms have fixed buckets. Keeping the
//! ~150 lines here avoids a dependency (and its registry types) in a security component.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use hwsign_verifier::RejectCode;

/// Bucket upper bounds, seconds: 50 µs to 10 s.
const BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// How a request ended, the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Outcome {
    /// Verified and answered by the upstream (`code="ok"`).
    Accepted,
    /// Refused by the verifier (`code` is the wire code).
    Refused,
    /// Verified, but the upstream did not answer (`code="upstream_unavailable"`).
    UpstreamFailed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Refused => "refused",
            Self::UpstreamFailed => "upstream_failed",
        }
    }
}

/// A histogram with [`BUCKETS`].
#[derive(Debug, Default)]
struct Histogram {
    /// Observations per bucket (not cumulative; summed when written).
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(index) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[index].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// The proxy's metrics, shared by every connection.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Accepted requests: the hot path, a lone atomic (no lock shared by the worker threads).
    accepted: AtomicU64,
    /// Refusals and upstream failures by (outcome, code).
    requests: Mutex<BTreeMap<(Outcome, &'static str), u64>>,
    verify: Histogram,
    upstream: Histogram,
    connections: AtomicI64,
}

impl Metrics {
    /// Counts a request that ended with `outcome` and `code`.
    pub(crate) fn count(&self, outcome: Outcome, code: Option<RejectCode>) {
        if outcome == Outcome::Accepted {
            self.accepted.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let code = code.map_or("ok", RejectCode::as_str);
        if let Ok(mut table) = self.requests.lock() {
            *table.entry((outcome, code)).or_insert(0) += 1;
        }
    }

    /// Time from the request head to the verifier's decision (the body read included).
    pub(crate) fn observe_verify(&self, elapsed: Duration) {
        self.verify.observe(elapsed);
    }

    /// Time from sending to the upstream to its response head (or failure).
    pub(crate) fn observe_upstream(&self, elapsed: Duration) {
        self.upstream.observe(elapsed);
    }

    /// A client connection opened (`+1`) or closed (`-1`).
    pub(crate) fn connection(&self, delta: i64) {
        self.connections.fetch_add(delta, Ordering::Relaxed);
    }

    /// The text exposition (`Content-Type: text/plain; version=0.0.4`).
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP hws_requests_total Requests answered, by outcome and wire code.\n");
        out.push_str("# TYPE hws_requests_total counter\n");
        let mut table = self.requests.lock().map(|t| t.clone()).unwrap_or_default();
        table.insert(
            (Outcome::Accepted, "ok"),
            self.accepted.load(Ordering::Relaxed),
        );
        for ((outcome, code), value) in table {
            let _ = writeln!(
                out,
                "hws_requests_total{{outcome=\"{}\",code=\"{code}\"}} {value}",
                outcome.as_str()
            );
        }
        self.verify.write(
            &mut out,
            "hws_verify_duration_seconds",
            "Time from a request's head to the verifier's decision, its body read included.",
        );
        self.upstream.write(
            &mut out,
            "hws_upstream_duration_seconds",
            "Time from forwarding a verified request to the upstream's response head.",
        );
        out.push_str("# HELP hws_connections_open Client connections open now.\n");
        out.push_str("# TYPE hws_connections_open gauge\n");
        let _ = writeln!(
            out,
            "hws_connections_open {}",
            self.connections.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_counts_by_outcome_and_code() {
        let metrics = Metrics::default();
        metrics.count(Outcome::Accepted, None);
        metrics.count(Outcome::Accepted, None);
        metrics.count(Outcome::Refused, Some(RejectCode::SignatureInvalid));
        metrics.observe_verify(Duration::from_micros(300));
        metrics.observe_verify(Duration::from_secs(30));
        let text = metrics.render();
        assert!(text.contains("hws_requests_total{outcome=\"accepted\",code=\"ok\"} 2\n"));
        assert!(
            text.contains("hws_requests_total{outcome=\"refused\",code=\"signature_invalid\"} 1\n")
        );
        assert!(text.contains("hws_verify_duration_seconds_bucket{le=\"0.00025\"} 0\n"));
        assert!(text.contains("hws_verify_duration_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("hws_verify_duration_seconds_bucket{le=\"10\"} 1\n"));
        assert!(text.contains("hws_verify_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("hws_verify_duration_seconds_count 2\n"));
        assert!(text.contains("hws_upstream_duration_seconds_count 0\n"));
    }
}
