//! What the router measures.

use polysocket_common::metrics::register;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

pub struct CreateMetrics {
    /// `polysocket_creates_total{outcome}`: every create, by how it ended.
    outcomes: IntCounterVec,
    /// How long creates take, upstream handshake included.
    pub duration: Histogram,
    /// Creates handed to another daemon, by why the first did not take it.
    moved: IntCounterVec,
    /// Daemons kept out of selection for a while.
    pub suspects: IntCounter,
    /// Sockets a token holds fleet-wide, as of this router's last create with it.
    token_sockets: IntGaugeVec,
    token_limit: IntGaugeVec,
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
        let moved = IntCounterVec::new(
            Opts::new("polysocket_creates_moved_total", "Creates handed to another daemon, by reason"),
            &["reason"],
        )
        .expect("valid metric");
        let suspects =
            IntCounter::new("polysocket_daemons_suspected_total", "Daemons kept out of selection for a while")
                .expect("valid metric");
        let by_token = |name: &str, help: &str| {
            register(registry, IntGaugeVec::new(Opts::new(name, help), &["token"]).expect("valid metric"))
        };
        CreateMetrics {
            token_sockets: by_token("polysocket_token_sockets", "Sockets a token holds fleet-wide, at its last create"),
            token_limit: by_token("polysocket_token_max_connections", "A token's max_connections"),
            outcomes: register(registry, outcomes),
            duration: register(registry, duration),
            moved: register(registry, moved),
            suspects: register(registry, suspects),
        }
    }

    /// Records a token's use against its limit; `label` is never the token.
    pub fn token_usage(&self, label: &str, used: u32, limit: u32) {
        self.token_sockets.with_label_values(&[label]).set(i64::from(used));
        self.token_limit.with_label_values(&[label]).set(i64::from(limit));
    }

    /// Counts a create moved off a daemon that did not answer
    /// (`no_answer`) or said it was full (`daemon_full`).
    pub fn moved(&self, reason: &str) {
        self.moved.with_label_values(&[reason]).inc();
        self.suspects.inc();
    }

    pub fn outcome(&self, outcome: &str) {
        self.outcomes.with_label_values(&[outcome]).inc();
    }
}
