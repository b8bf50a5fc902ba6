//! What the daemon measures. Counters on the message path are resolved once
//! here, so counting a message is an atomic add, not a label lookup.

use actix_web::http::StatusCode;
use polysocket_common::metrics::register;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use std::time::Duration;

pub struct DaemonMetrics {
    pub sockets_open: IntGauge,
    /// Every socket's delivery queue adds to it and takes from it.
    pub queued_bytes: IntGauge,
    /// `--capacity`, so dashboards and alerts can show how full a daemon is.
    pub socket_capacity: IntGauge,
    /// 1 while heartbeats reach the fleet (routers can pick this daemon).
    pub fleet_registered: IntGauge,
    /// 1 from SIGTERM until exit.
    pub draining: IntGauge,
    pub polls_waiting: IntGauge,
    /// Streaming `/j` responses open.
    pub streams_open: IntGauge,
    /// Of those, the gzipped ones (bounded by `--max-compressed-streams`).
    pub streams_compressed: IntGauge,
    /// Requests naming a socket this daemon does not hold: after a restart,
    /// clients of the sockets it lost.
    pub unknown_sockets: IntCounter,
    pub handshake_seconds: Histogram,
    /// Messages and payload bytes from clients to upstreams.
    pub to_upstream: Traffic,
    /// Messages and payload bytes from upstreams to clients.
    pub to_client: Traffic,
    closes: IntCounterVec,
    /// `/s` and `/j` answers by endpoint and status.
    requests: IntCounterVec,
    /// Each endpoint's series that every answer touches, resolved once: a
    /// label lookup is a hash and a lock, twice per request.
    endpoints: [EndpointSeries; 3],
}

struct EndpointSeries {
    /// How long its requests take (for `/j`, the wait for messages included).
    seconds: Histogram,
    /// Its answers with the status it succeeds with, the common case.
    succeeded: IntCounter,
}

/// Counts one in a gauge for as long as it lives, including when a client
/// goes away mid-wait and its handler is dropped.
pub struct Counted(IntGauge);

impl Counted {
    pub fn start(gauge: &IntGauge) -> Self {
        gauge.inc();
        Counted(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The daemon's two endpoints, as metric labels.
#[derive(Clone, Copy)]
pub enum Endpoint {
    Send,
    Poll,
    /// A streaming `/j`, counted when its response starts.
    Stream,
}

impl Endpoint {
    const ALL: [Endpoint; 3] = [Endpoint::Send, Endpoint::Poll, Endpoint::Stream];

    fn label(self) -> &'static str {
        match self {
            Endpoint::Send => "send",
            Endpoint::Poll => "poll",
            Endpoint::Stream => "stream",
        }
    }

    fn success(self) -> StatusCode {
        match self {
            Endpoint::Send => StatusCode::CREATED,
            Endpoint::Poll | Endpoint::Stream => StatusCode::OK,
        }
    }
}

pub struct Traffic {
    pub messages: IntCounter,
    pub bytes: IntCounter,
}

impl Traffic {
    pub fn count(&self, bytes: usize) {
        self.messages.inc();
        self.bytes.inc_by(bytes as u64);
    }
}

impl DaemonMetrics {
    pub fn new(registry: &Registry, capacity: u32) -> Self {
        let gauge = |name: &str, help: &str| register(registry, IntGauge::new(name, help).expect("valid metric"));
        let by_direction = |name: &str, help: &str| {
            register(registry, IntCounterVec::new(Opts::new(name, help), &["direction"]).expect("valid metric"))
        };
        let messages = by_direction("polysocket_messages_total", "Messages bridged, by direction");
        let bytes = by_direction("polysocket_bytes_total", "Payload bytes bridged, by direction");
        let traffic = |direction: &str| Traffic {
            messages: messages.with_label_values(&[direction]),
            bytes: bytes.with_label_values(&[direction]),
        };
        let requests = register(
            registry,
            IntCounterVec::new(
                Opts::new("polysocket_requests_total", "/s and /j answers by endpoint and status"),
                &["endpoint", "status"],
            )
            .expect("valid metric"),
        );
        let request_seconds = register(
            registry,
            HistogramVec::new(
                HistogramOpts::new("polysocket_request_seconds", "Time to answer /s and /j (polls: waiting included)")
                    .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0, 60.0]),
                &["endpoint"],
            )
            .expect("valid metric"),
        );
        let socket_capacity = gauge("polysocket_socket_capacity", "Most sockets this daemon holds (--capacity)");
        socket_capacity.set(i64::from(capacity));
        DaemonMetrics {
            sockets_open: gauge("polysocket_sockets_open", "Bridged sockets this daemon holds"),
            queued_bytes: gauge(
                "polysocket_queued_bytes",
                "Bytes of upstream messages waiting for clients, all sockets",
            ),
            socket_capacity,
            fleet_registered: gauge("polysocket_fleet_registered", "1 while this daemon's heartbeats reach the fleet"),
            draining: gauge("polysocket_draining", "1 while this daemon drains on shutdown"),
            polls_waiting: gauge("polysocket_polls_waiting", "Long polls waiting for messages"),
            streams_open: gauge("polysocket_streams_open", "Streaming /j responses (SSE, NDJSON) open"),
            streams_compressed: gauge("polysocket_streams_compressed", "Streaming /j responses sent gzipped"),
            unknown_sockets: register(
                registry,
                IntCounter::new(
                    "polysocket_unknown_socket_requests_total",
                    "Requests for sockets this daemon does not hold",
                )
                .expect("valid metric"),
            ),
            handshake_seconds: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new("polysocket_upstream_handshake_seconds", "Upstream connect and handshake time")
                        .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
                )
                .expect("valid metric"),
            ),
            to_upstream: traffic("upstream"),
            to_client: traffic("client"),
            closes: register(
                registry,
                IntCounterVec::new(Opts::new("polysocket_socket_closes_total", "Sockets ended, by cause"), &["cause"])
                    .expect("valid metric"),
            ),
            endpoints: Endpoint::ALL.map(|endpoint| EndpointSeries {
                seconds: request_seconds.with_label_values(&[endpoint.label()]),
                succeeded: requests.with_label_values(&[endpoint.label(), endpoint.success().as_str()]),
            }),
            requests,
        }
    }

    /// Counts one `/s` or `/j` answer.
    pub fn answered(&self, endpoint: Endpoint, status: StatusCode, took: Duration) {
        let series = &self.endpoints[endpoint as usize];
        if status == endpoint.success() {
            series.succeeded.inc();
        } else {
            self.requests.with_label_values(&[endpoint.label(), status.as_str()]).inc();
        }
        series.seconds.observe(took.as_secs_f64());
    }

    /// Counts a socket's end: `delivered` (its close reached the client),
    /// `idle`, `abandoned` (a create nobody waited for), or `drained`
    /// (closed because the daemon shut down).
    pub fn closed(&self, cause: &str) {
        self.closes.with_label_values(&[cause]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_by_endpoint_and_status() {
        let registry = Registry::new();
        let metrics = DaemonMetrics::new(&registry, 10);
        metrics.answered(Endpoint::Send, StatusCode::CREATED, Duration::from_millis(1));
        metrics.answered(Endpoint::Send, StatusCode::TOO_MANY_REQUESTS, Duration::from_millis(1));
        metrics.answered(Endpoint::Poll, StatusCode::OK, Duration::from_millis(1));
        metrics.answered(Endpoint::Poll, StatusCode::OK, Duration::from_millis(1));
        metrics.answered(Endpoint::Stream, StatusCode::OK, Duration::from_millis(1));
        let count = |endpoint: &str, status: &str| metrics.requests.with_label_values(&[endpoint, status]).get();
        assert_eq!(count("send", "201"), 1);
        assert_eq!(count("send", "429"), 1);
        assert_eq!(count("poll", "200"), 2);
        assert_eq!(count("stream", "200"), 1);
        let timed = |endpoint: Endpoint| metrics.endpoints[endpoint as usize].seconds.get_sample_count();
        assert_eq!((timed(Endpoint::Send), timed(Endpoint::Poll), timed(Endpoint::Stream)), (2, 2, 1));
        let labelled = |endpoint: &str| {
            registry.gather().iter().find(|f| f.name() == "polysocket_request_seconds").map_or(0, |family| {
                family
                    .get_metric()
                    .iter()
                    .filter(|m| m.get_label().iter().any(|l| l.value() == endpoint))
                    .map(|m| m.get_histogram().get_sample_count())
                    .sum::<u64>()
            })
        };
        assert_eq!((labelled("send"), labelled("poll"), labelled("stream")), (2, 2, 1), "each under its own label");
    }
}
