//! What the router measures.

use polysocket_common::metrics::register;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

pub struct CreateMetrics {
    /// `polysocket_creates_total{outcome}`: every create, by how it ended.
    outcomes: IntCounterVec,
    /// How long creates take, upstream handshake included.
    pub duration: Histogram,
}

impl CreateMetrics {
    pub fn new(registry: &Registry) -> Self {
        let outcomes = IntCounterVec::new(Opts::new("polysocket_creates_total", "Creates by outcome"), &["outcome"])
            .expect("valid metric");
        let duration = Histogram::with_opts(
            HistogramOpts::new("polysocket_create_seconds", "Time to answer a valid create")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )
        .expect("valid metric");
        CreateMetrics { outcomes: register(registry, outcomes), duration: register(registry, duration) }
    }

    pub fn outcome(&self, outcome: &str) {
        self.outcomes.with_label_values(&[outcome]).inc();
    }
}
