//! Prometheus plumbing shared by both services.

use prometheus::{Encoder, Registry, TextEncoder};

/// The registry's metrics in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out).expect("text encoding into memory cannot fail");
    String::from_utf8(out).expect("the text format is UTF-8")
}

/// The `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Adds the metrics every process has, counted wherever they happen (Redis
/// errors, requests the HTTP server gave up on), to a service's registry.
pub fn register_process_metrics(registry: &Registry) {
    register(registry, crate::fleet::REDIS_ERRORS.clone());
    register(registry, crate::logging::HTTP_CLIENT_ERRORS.clone());
}

/// Registers `metric` and hands it back, for building metric structs in one
/// expression. Names are static and unique, so registration cannot fail.
pub fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry.register(Box::new(metric.clone())).expect("metric names are unique");
    metric
}
