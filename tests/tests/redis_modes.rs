//! The Redis deployments operators run: TLS with a private CA, and ACL users,
//! each with a real router and daemon process; and the start-up errors for a
//! configuration Redis refuses (an outage, instead, is ridden out).

mod support;

use polysocket_tests::http::query;
use polysocket_tests::process::Process;
use polysocket_tests::redis_server::RedisServer;
use polysocket_tests::upstream::UpstreamServer;
use polysocket_tests::{free_port, init_logs};
use serde_json::{Value, json};
use std::time::Duration;
use support::{CB, Socket};

/// A tokens file for the test, removed with it.
struct Tokens(std::path::PathBuf);

impl Tokens {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("polysocket-modes-{}-{}.json", std::process::id(), free_port()));
        let tokens = json!({"tokens": [
            {"token": "dev", "targets": ["ws://127.0.0.1:*/*"], "origins": ["*"], "max_connections": 10}]});
        std::fs::write(&path, tokens.to_string()).unwrap();
        Tokens(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Tokens {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A router and a daemon on `redis` (with `extra` flags each), a create, and
/// a message there and back.
async fn round_trip_through(redis: &[&str]) {
    init_logs();
    let upstream = UpstreamServer::start();
    let tokens = Tokens::new();
    let router = Process::start("router", free_port(), &[redis, &["--tokens", tokens.path()]].concat());
    let port = free_port();
    let fqdn = format!("d1.localhost:{port}");
    let daemon_args = [redis, &["--fqdn", &fqdn, "--allow-private-targets", "--heartbeat-interval", "300ms"]].concat();
    let daemon = Process::start("polysocketd", port, &daemon_args);
    router.http.wait_until_ok("/readyz", Duration::from_secs(20)).await;
    daemon.http.wait_until_ok("/readyz", Duration::from_secs(20)).await;

    let target = upstream.url("/echo");
    let params = query(&[("cb", CB), ("from", "modes"), ("target", &target), ("token", "dev")]);
    let created: Value = router.http.get(None, &format!("/create?{params}"), &[]).await.jsonp(CB);
    let socket = Socket::new(&created, daemon.http.clone());
    socket.send_text("over the wire").await;
    assert_eq!(socket.receive(1).await[0]["data"], "over the wire");
}

/// Starts `router` with `args` and returns its exit code and what it logged,
/// expecting it to give up at start-up.
fn start_up_failure(args: &[&str]) -> (Option<i32>, String) {
    let log = std::env::temp_dir().join(format!("polysocket-modes-{}-{}.log", std::process::id(), free_port()));
    let mut router = Process::start_logging_to("router", free_port(), args, &log);
    let status = router.wait_exit(Duration::from_secs(15)).expect("the router gives up at start-up");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    (status.code(), logged)
}

#[actix_web::test]
async fn a_fleet_works_over_tls_with_a_private_ca() {
    let redis = RedisServer::start_tls();
    let ca = redis.ca_file().to_string_lossy().into_owned();
    round_trip_through(&["--redis", &redis.url(), "--redis-ca-file", &ca]).await;
}

#[actix_web::test]
async fn a_certificate_that_does_not_verify_is_a_start_up_error() {
    let redis = RedisServer::start_tls();
    let (code, logged) = start_up_failure(&["--redis", &redis.url()]);
    assert_eq!(code, Some(64), "{logged}");
    assert!(logged.contains("redis refuses this configuration") && logged.contains("certificate"), "{logged}");
}

#[actix_web::test]
async fn a_fleet_works_with_an_acl_user_and_a_wrong_password_is_a_start_up_error() {
    let redis = RedisServer::start_with_user("polysocket", "s3cret-pw");
    let port = redis.url().rsplit(':').next().unwrap().to_owned();
    round_trip_through(&["--redis", &format!("redis://polysocket:s3cret-pw@127.0.0.1:{port}")]).await;

    for url in [format!("redis://polysocket:wrong-pw@127.0.0.1:{port}"), format!("redis://127.0.0.1:{port}")] {
        let (code, logged) = start_up_failure(&["--redis", &url]);
        assert_eq!(code, Some(64), "{url}: {logged}");
        assert!(logged.contains("redis refuses this configuration"), "{url}: {logged}");
        assert!(!logged.contains("wrong-pw"), "the password is not logged: {logged}");
    }
}

#[actix_web::test]
async fn an_unreachable_redis_is_an_outage_not_a_configuration_error() {
    let router = Process::start("router", free_port(), &["--redis", &format!("redis://127.0.0.1:{}", free_port())]);
    // It serves (and says it is not ready) instead of exiting.
    router.http.wait_until_ok("/healthz", Duration::from_secs(20)).await;
    assert!(!router.http.answers_ok("/readyz").await);
}
