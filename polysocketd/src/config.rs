//! polysocketd configuration: every flag also reads the environment variable
//! shown in `polysocketd --help`.

use clap::Parser;
use polysocket_common::cli::{ServiceArgs, parse_duration};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, Parser)]
#[command(name = "polysocketd", version, about = "polysocket daemon: bridges HTTP clients to upstream WebSockets")]
pub struct DaemonConfig {
    /// Address to serve /s and /j (and /create in standalone mode) on.
    #[arg(long, env = "POLYSOCKET_LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,

    /// Public name clients reach this daemon by (HOST[:PORT]); each socket
    /// gets `{uniq}.` prepended, so the daemon needs a wildcard DNS name and
    /// certificate of its own. Defaults to `localhost:<port>` in standalone
    /// mode. See --socket-domain for one wildcard shared by the whole fleet.
    #[arg(long, env = "POLYSOCKET_FQDN", required_unless_present_any = ["standalone", "socket_domain"])]
    pub fqdn: Option<String>,

    /// Domain (DOMAIN[:PORT]) shared by every daemon of the fleet: sockets
    /// are served on `s<uniq>-<daemon name>.<DOMAIN>`, so one wildcard DNS
    /// record and certificate cover any number of daemons, and a proxy in
    /// front routes by the daemon name in the label.
    #[arg(long, env = "POLYSOCKET_SOCKET_DOMAIN", conflicts_with = "fqdn", requires = "daemon_name")]
    pub socket_domain: Option<String>,

    /// This daemon's name inside socket host names (with --socket-domain):
    /// a DNS label of 1-40 lowercase letters, digits and inner hyphens; in
    /// Kubernetes, the pod name.
    #[arg(long, env = "POLYSOCKET_DAEMON_NAME", requires = "socket_domain", value_parser = parse_daemon_name)]
    pub daemon_name: Option<String>,

    /// Most sockets this daemon holds at once.
    #[arg(long, env = "POLYSOCKET_CAPACITY", default_value_t = 10_000)]
    pub capacity: u32,

    /// Allow upstream targets on loopback, private, link-local and other
    /// non-public addresses (development and deliberate internal use).
    #[arg(long, env = "POLYSOCKET_ALLOW_PRIVATE_TARGETS")]
    pub allow_private_targets: bool,

    /// Serve /create too, from this one process, with an in-memory fleet and
    /// no Redis.
    #[arg(long, env = "POLYSOCKET_STANDALONE")]
    pub standalone: bool,

    /// Redis (fleet mode); tokens and create settings (standalone mode only:
    /// otherwise the router has them).
    #[command(flatten)]
    pub service: ServiceArgs,

    #[command(flatten)]
    pub bridge: BridgeSettings,

    /// On SIGTERM/SIGINT, how long to wait for clients to read the close of
    /// their sockets before exiting.
    #[arg(long, env = "POLYSOCKET_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// How often the daemon renews its registry entry; a daemon that misses
    /// two renewals drops out of selection.
    #[arg(long, env = "POLYSOCKET_HEARTBEAT_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
}

/// Per-socket limits and timings.
#[derive(Debug, Clone, clap::Args)]
pub struct BridgeSettings {
    /// Longest a /j poll may wait (a client's `ttl` is clamped to it).
    #[arg(long, env = "POLYSOCKET_MAX_POLL_TTL", default_value = "55s", value_parser = parse_duration)]
    pub max_poll_ttl: Duration,

    /// A socket whose client neither polls nor sends for this long is closed
    /// (measured from the end of its last poll).
    #[arg(long, env = "POLYSOCKET_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Largest message, in bytes, accepted in either direction.
    #[arg(long, env = "POLYSOCKET_MAX_MESSAGE_BYTES", default_value_t = 1 << 20)]
    pub max_message_bytes: usize,

    /// Longest a streaming /j response (SSE, NDJSON) lives before its client
    /// reconnects from the last seq it read.
    #[arg(long, env = "POLYSOCKET_MAX_STREAM_TIME", default_value = "60s", value_parser = parse_duration)]
    pub max_stream_time: Duration,

    /// Bytes a streaming /j response writes on the wire (compressed, where
    /// it is) before it ends and its client reconnects; while messages are
    /// waiting it goes on, up to twice that. What it wrote stays queued
    /// until then, so it also ends once it has written half of
    /// --max-queue-bytes of messages.
    #[arg(long, env = "POLYSOCKET_MAX_STREAM_BYTES", default_value_t = 128 << 10)]
    pub max_stream_bytes: usize,

    /// Streams gzipped at once (each holds a compression context of about
    /// 260 KiB); streams beyond that go uncompressed. 0: none.
    #[arg(long, env = "POLYSOCKET_MAX_COMPRESSED_STREAMS", default_value_t = 1000)]
    pub max_compressed_streams: usize,

    /// Never gzip /j answers or streams. Compression lets someone who puts
    /// chosen text into a socket's messages and sees the encrypted sizes
    /// guess other text in the same answer (BREACH): set it where upstreams
    /// mix secrets with text others control.
    #[arg(long, env = "POLYSOCKET_NO_GZIP")]
    pub no_gzip: bool,

    /// Undelivered bytes a socket buffers for its client before it stops
    /// reading from the upstream (backpressure instead of loss).
    #[arg(long, env = "POLYSOCKET_MAX_QUEUE_BYTES", default_value_t = 4 << 20)]
    pub max_queue_bytes: usize,

    /// Undelivered bytes all sockets of the daemon buffer together. Past it,
    /// sockets holding more than 64 KiB stop reading their upstreams until
    /// their clients catch up, and creates are refused (daemon full).
    #[arg(long, env = "POLYSOCKET_MAX_DAEMON_QUEUE_BYTES", default_value_t = 1 << 30)]
    pub max_daemon_queue_bytes: usize,

    /// Longest an upstream connect plus WebSocket handshake may take.
    #[arg(long, env = "POLYSOCKET_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Longest time between pings to each upstream (randomized below it);
    /// an upstream that has not answered by the next ping is gone.
    #[arg(long, env = "POLYSOCKET_PING_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// Most upstream handshakes in progress to one host at a time (beyond
    /// RFC 6455's one per client and upstream address); others queue.
    #[arg(long, env = "POLYSOCKET_MAX_HANDSHAKES_PER_HOST", default_value_t = 32)]
    pub max_handshakes_per_host: usize,

    /// Lookups of unknown sockets per second one client address may make
    /// (a burst of ten seconds' worth) before further unknown ids get 429 instead
    /// of 403 (socket-id guessing; 0: no limit). Real sockets are never
    /// refused: many users may share the address. High enough that the
    /// clients behind one NAT of the sockets a daemon lost in a restart all
    /// hear "unknown socket" within seconds.
    #[arg(long, env = "POLYSOCKET_UNKNOWN_SOCKET_RATE", default_value_t = 200)]
    pub unknown_socket_rate: u32,

    /// Polls one client address may have waiting at once (0: no limit; a
    /// socket never has more than one poll waiting, so the sockets a token
    /// may open already bound them).
    #[arg(long, env = "POLYSOCKET_MAX_POLLS_PER_IP", default_value_t = 0)]
    pub max_polls_per_ip: usize,

    /// Messages per second one socket may send, each message of a batch
    /// counted (a burst of twice that; 0: no limit).
    #[arg(long, env = "POLYSOCKET_MAX_SENDS_PER_SECOND", default_value_t = 500)]
    pub max_sends_per_second: u32,

    /// PEM file of extra certificate authorities trusted for wss://
    /// upstreams (a private CA), on top of the public roots.
    #[arg(long, env = "POLYSOCKET_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,

    /// How long a /s request body may take to arrive (slow bodies get 408).
    #[arg(long, env = "POLYSOCKET_BODY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub body_timeout: Duration,

    /// Longest a send may wait for a slow upstream to take the message.
    #[arg(long, env = "POLYSOCKET_SEND_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub send_timeout: Duration,
}

/// Longest daemon name: with `s`, 12 hex digits and a hyphen in front, a
/// socket's label stays within DNS's 63 characters.
const MAX_DAEMON_NAME: usize = 40;

fn parse_daemon_name(name: &str) -> Result<String, String> {
    let label_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if name.is_empty()
        || name.len() > MAX_DAEMON_NAME
        || !name.chars().all(label_char)
        || name.starts_with('-')
        || name.ends_with('-')
    {
        return Err(format!(
            "{name:?} is not a DNS label of 1-{MAX_DAEMON_NAME} lowercase letters, digits and inner hyphens"
        ));
    }
    Ok(name.to_owned())
}

/// How socket host names are formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketHosts {
    /// `{uniq}.<fqdn>`: a wildcard per daemon (the seed's form).
    UnderDaemon { fqdn: String },
    /// `{uniq}-<daemon>.<domain>`: one wildcard for the whole fleet.
    SharedDomain { domain: String, daemon: String },
}

impl SocketHosts {
    /// The host name of a socket whose unique label is `uniq`.
    pub fn socket_host(&self, uniq: &str) -> String {
        match self {
            SocketHosts::UnderDaemon { fqdn } => format!("{uniq}.{fqdn}"),
            SocketHosts::SharedDomain { domain, daemon } => format!("{uniq}-{daemon}.{domain}"),
        }
    }

    /// How the daemon is named in the registry and in logs.
    pub fn daemon_name(&self) -> String {
        match self {
            SocketHosts::UnderDaemon { fqdn } => fqdn.clone(),
            SocketHosts::SharedDomain { domain, daemon } => format!("{daemon}.{domain}"),
        }
    }
}

impl DaemonConfig {
    /// The host names advertised to clients.
    pub fn socket_hosts(&self, bound_port: u16) -> SocketHosts {
        match (&self.socket_domain, &self.daemon_name) {
            (Some(domain), Some(daemon)) => {
                SocketHosts::SharedDomain { domain: domain.clone(), daemon: daemon.clone() }
            }
            _ => SocketHosts::UnderDaemon {
                fqdn: self.fqdn.clone().unwrap_or_else(|| format!("localhost:{bound_port}")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clap checks a command's definition only when it is built: two flags
    /// with one name (the upstream's --ca-file and Redis' CA) panic at start-up.
    #[test]
    fn every_flag_is_defined_once() {
        <DaemonConfig as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn fqdn_is_required_outside_standalone() {
        assert!(DaemonConfig::try_parse_from(["polysocketd"]).is_err());
        let standalone = DaemonConfig::try_parse_from(["polysocketd", "--standalone"]).unwrap();
        assert_eq!(standalone.socket_hosts(8081).socket_host("s1"), "s1.localhost:8081");
        let fleet = DaemonConfig::try_parse_from(["polysocketd", "--fqdn", "d1.example.com"]).unwrap();
        assert_eq!(fleet.socket_hosts(8081).socket_host("s1"), "s1.d1.example.com");
        assert_eq!(fleet.bridge.idle_timeout, Duration::from_secs(60));
    }

    #[test]
    fn one_domain_for_the_whole_fleet() {
        let parse = |args: &[&str]| DaemonConfig::try_parse_from([&["polysocketd"], args].concat());
        let shared = parse(&["--socket-domain", "ps.example.com", "--daemon-name", "polysocketd-7"]).unwrap();
        let hosts = shared.socket_hosts(8081);
        assert_eq!(hosts.socket_host("s0123456789ab"), "s0123456789ab-polysocketd-7.ps.example.com");
        assert_eq!(hosts.daemon_name(), "polysocketd-7.ps.example.com");
        assert!(parse(&["--socket-domain", "ps.example.com"]).is_err(), "a daemon name is needed");
        assert!(parse(&["--daemon-name", "d1"]).is_err(), "a daemon name alone means nothing");
        assert!(parse(&["--socket-domain", "x", "--daemon-name", "d1", "--fqdn", "d1.x"]).is_err(), "one naming");
        for bad in ["Polysocketd-0", "-a", "a-", "a.b", "", &"a".repeat(41)] {
            assert!(parse(&["--socket-domain", "x", "--daemon-name", bad]).is_err(), "{bad:?}");
        }
    }
}
