//! What the daemon measures. Counters on the message path are resolved once
//! here, so counting a message is an atomic add, not a label lookup.

use actix_web::http::StatusCode;
use polysocket_common::metrics::register;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use std::time::Duration;

pub struct DaemonMetrics {
    pub sockets_open: IntGauge,
    /// `--capacity`, so dashboards and alerts can show how full a daemon is.
    pub socket_capacity: IntGauge,
    /// 1 while heartbeats reach the fleet (routers can pick this daemon).
    pub fleet_registered: IntGauge,
    /// 1 from SIGTERM until exit.
    pub draining: IntGauge,
    pub polls_waiting: IntGauge,
    /// Streaming `/j` responses open.
    pub streams_open: IntGauge,
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
    /// How long `/s` and `/j` take (for `/j`, the wait for messages included).
    request_seconds: HistogramVec,
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
    fn label(self) -> &'static str {
        match self {
            Endpoint::Send => "send",
            Endpoint::Poll => "poll",
            Endpoint::Stream => "stream",
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
        let socket_capacity = gauge("polysocket_socket_capacity", "Most sockets this daemon holds (--capacity)");
        socket_capacity.set(i64::from(capacity));
        DaemonMetrics {
            sockets_open: gauge("polysocket_sockets_open", "Bridged sockets this daemon holds"),
            socket_capacity,
            fleet_registered: gauge("polysocket_fleet_registered", "1 while this daemon's heartbeats reach the fleet"),
            draining: gauge("polysocket_draining", "1 while this daemon drains on shutdown"),
            polls_waiting: gauge("polysocket_polls_waiting", "Long polls waiting for messages"),
            streams_open: gauge("polysocket_streams_open", "Streaming /j responses (SSE, NDJSON) open"),
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
            requests: register(
                registry,
                IntCounterVec::new(
                    Opts::new("polysocket_requests_total", "/s and /j answers by endpoint and status"),
                    &["endpoint", "status"],
                )
                .expect("valid metric"),
            ),
            request_seconds: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "polysocket_request_seconds",
                        "Time to answer /s and /j (polls: waiting included)",
                    )
                    .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0, 60.0]),
                    &["endpoint"],
                )
                .expect("valid metric"),
            ),
        }
    }

    /// Counts one `/s` or `/j` answer.
    pub fn answered(&self, endpoint: Endpoint, status: StatusCode, took: Duration) {
        self.requests.with_label_values(&[endpoint.label(), status.as_str()]).inc();
        self.request_seconds.with_label_values(&[endpoint.label()]).observe(took.as_secs_f64());
    }

    /// Counts a socket's end: `delivered` (its close reached the client),
    /// `idle`, `abandoned` (a create nobody waited for), or `drained`
    /// (closed because the daemon shut down).
    pub fn closed(&self, cause: &str) {
        self.closes.with_label_values(&[cause]).inc();
    }
}
