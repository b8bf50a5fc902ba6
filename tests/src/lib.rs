//! Test harness for polysocket: everything a test needs that is not
//! polysocket itself.
//!
//! - [`redis_server`]: a private `redis-server` on a free port, killable and
//!   restartable;
//! - [`upstream`]: real WebSocket servers with scripted behaviours;
//! - [`tachyon`]: one of them, a Tachyon-like server that needs a bearer;
//! - [`http`]: a small HTTP client that checks and unwraps JSONP answers;
//! - [`process`]: the real router and polysocketd binaries as child processes;
//! - [`eventually`]: retries an assertion until a deadline instead of sleeping.
//!
//! Logs are shown only when `TEST_LOG` is set.
#![forbid(unsafe_code)]

pub mod http;
pub mod process;
pub mod redis_server;
pub mod tachyon;
pub mod upstream;

use std::future::Future;
use std::time::Duration;

/// Enables env_logger output when `TEST_LOG` is set (e.g. `TEST_LOG=debug`).
pub fn init_logs() {
    if let Ok(level) = std::env::var("TEST_LOG") {
        let _ = env_logger::Builder::new().parse_filters(&level).is_test(true).try_init();
    }
}

/// Runs `check` until it returns `Some`, or panics with `what` after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A certificate for `localhost` and the certificate authority, made up on
/// the spot, that signed it: nothing trusts that authority by default.
pub struct LocalhostCertificate {
    pub ca: rcgen::Certificate,
    pub cert: rcgen::Certificate,
    pub key: rcgen::KeyPair,
}

impl LocalhostCertificate {
    pub fn new(authority_name: &str) -> Self {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, authority_name);
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().expect("server key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("server params")
            .signed_by(&key, &issuer)
            .expect("server certificate");
        LocalhostCertificate { ca, cert, key }
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind port 0").port()
}
