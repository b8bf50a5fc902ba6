//! Logs an operator can keep: plain text or JSON lines, and no line that an
//! outsider can multiply at will.
//!
//! actix-http logs every request it cannot parse (a control byte in the
//! request line, a connection cut mid-request) at ERROR. Those are the
//! client's faults, and anyone can send thousands: they are counted in
//! `polysocket_http_client_errors_total` and logged at debug level only.

use clap::{Args, ValueEnum};
use log::{Level, Log, Metadata, Record};
use prometheus::IntCounter;
use std::io::Write;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// How often an outage that goes on is reported again.
const OUTAGE_REPORT_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line (`ts`, `level`, `target`, `msg`), for log pipelines.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// How log lines are written (levels come from RUST_LOG, default info).
    #[arg(long, env = "POLYSOCKET_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// A socket as log lines name it: `#` and eight hex digits. The socket id
/// is the socket's only capability, so no log line holds it; the tag
/// follows one socket through the router's and the daemons' logs and tells
/// nothing about the id (122 random bits, of which the tag keeps 32 bits of
/// a one-way hash).
pub fn socket_tag(socket: &str) -> String {
    format!("#{}", one_way_hex(socket, 4))
}

/// The first `bytes` bytes of the SHA-1 of a secret, in hex: a stable name
/// for it that cannot be turned back into it.
pub fn one_way_hex(secret: &str, bytes: usize) -> String {
    use sha1::Digest;
    sha1::Sha1::digest(secret.as_bytes()).iter().take(bytes).map(|b| format!("{b:02x}")).collect()
}

/// Requests the HTTP server gave up on because of the client.
pub static HTTP_CLIENT_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new("polysocket_http_client_errors_total", "Requests that could not be parsed or broke off")
        .expect("valid metric")
});

/// Whether a record is actix-http reporting a client's malformed or broken request.
fn is_client_fault(record: &Record) -> bool {
    record.level() <= Level::Warn && record.target().starts_with("actix_http::h1")
}

/// env_logger, with client faults demoted and counted.
struct ServiceLogger {
    inner: env_logger::Logger,
}

impl Log for ServiceLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !is_client_fault(record) {
            return self.inner.log(record);
        }
        HTTP_CLIENT_ERRORS.inc();
        let demoted = Record::builder().args(*record.args()).level(Level::Debug).target(record.target()).build();
        if self.inner.enabled(demoted.metadata()) {
            self.inner.log(&demoted);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Installs the process's logger: RUST_LOG levels (default info), in `args`' format.
pub fn init(args: &LogArgs) {
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if args.log_format == LogFormat::Json {
        builder.format(|out, record| {
            let line = serde_json::json!({
                "ts": out.timestamp_millis().to_string(),
                "level": record.level().as_str(),
                "target": record.target(),
                "msg": record.args().to_string(),
            });
            writeln!(out, "{line}")
        });
    }
    let inner = builder.build();
    let max_level = inner.filter();
    if log::set_boxed_logger(Box::new(ServiceLogger { inner })).is_ok() {
        log::set_max_level(max_level);
    }
}

/// A failure that repeats while it lasts (Redis unreachable, retried every
/// few hundred milliseconds): a warning when it starts, one a minute while
/// it lasts with how often it happened, and a line when it ends, instead of
/// a line per retry.
pub struct Outage {
    what: String,
    failures: u64,
    /// When it started, and when it was last reported.
    ongoing: Option<(Instant, Instant)>,
}

impl Outage {
    pub fn new(what: impl Into<String>) -> Self {
        Outage { what: what.into(), failures: 0, ongoing: None }
    }

    pub fn failed(&mut self, error: &dyn std::fmt::Display) {
        self.failures += 1;
        let now = Instant::now();
        match &mut self.ongoing {
            None => {
                self.ongoing = Some((now, now));
                log::warn!("{}: {error}", self.what);
            }
            Some((started, reported)) if now - *reported >= OUTAGE_REPORT_EVERY => {
                *reported = now;
                let secs = (now - *started).as_secs();
                log::warn!("{}: still failing after {secs}s and {} attempts: {error}", self.what, self.failures);
            }
            Some(_) => {}
        }
    }

    pub fn ended(&mut self) {
        if let Some((started, _)) = self.ongoing.take() {
            let secs = started.elapsed().as_secs_f32();
            log::info!("{}: recovered after {secs:.1}s and {} failed attempts", self.what, self.failures);
            self.failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_actix_http_complaints_are_client_faults() {
        let record = |target, level| Record::builder().target(target).level(level).build().clone();
        assert!(is_client_fault(&record("actix_http::h1::dispatcher", Level::Error)));
        assert!(!is_client_fault(&record("actix_http::h1::dispatcher", Level::Debug)));
        assert!(!is_client_fault(&record("polysocketd::daemon", Level::Error)));
    }

    #[test]
    fn a_socket_tag_is_short_stable_and_not_the_id() {
        let id = "0123456789abcdef0123456789abcdef";
        let tag = socket_tag(id);
        assert_eq!(tag.len(), 9);
        assert_eq!(tag, socket_tag(id));
        assert_ne!(tag, socket_tag("0123456789abcdef0123456789abcdee"));
        assert!(!id.contains(&tag[1..]), "{tag}");
    }
}
