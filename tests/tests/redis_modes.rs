//! The Redis deployments operators run: TLS with a private CA, ACL users,
//! a primary with a replica under three Sentinels (failed over under load)
//! and a three-primary Redis Cluster, each with a real router and daemon process; and the start-up
//! errors for a configuration Redis refuses (an outage, instead, is ridden
//! out).

mod support;

use polysocket_tests::http::query;
use polysocket_tests::process::Process;
use polysocket_tests::redis_server::{RedisCluster, RedisServer, Sentinel};
use polysocket_tests::upstream::UpstreamServer;
use polysocket_tests::{eventually, free_port, init_logs};
use serde_json::{Value, json};
use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};
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

/// A router and a daemon on one Redis, ready, and an echo upstream; the
/// token "dev" may hold ten sockets.
struct FleetOn {
    router: Process,
    daemon: Process,
    upstream: UpstreamServer,
    _tokens: Tokens,
}

impl FleetOn {
    /// Starts both with `redis` (the `--redis` flags).
    async fn start(redis: &[&str]) -> Self {
        init_logs();
        let upstream = UpstreamServer::start();
        let tokens = Tokens::new();
        let router = Process::start("router", free_port(), &[redis, &["--tokens", tokens.path()]].concat());
        let port = free_port();
        let fqdn = format!("d1.localhost:{port}");
        let daemon_args =
            [redis, &["--fqdn", &fqdn, "--allow-private-targets", "--heartbeat-interval", "300ms"]].concat();
        let daemon = Process::start("polysocketd", port, &daemon_args);
        router.http.wait_until_ok("/readyz", Duration::from_secs(20)).await;
        daemon.http.wait_until_ok("/readyz", Duration::from_secs(20)).await;
        FleetOn { router, daemon, upstream, _tokens: tokens }
    }

    /// What `/create` answered (JSONP unwrapped), whether it opened or not.
    async fn create(&self) -> Value {
        let target = self.upstream.url("/echo");
        let params = query(&[("cb", CB), ("from", "modes"), ("target", &target), ("token", "dev")]);
        self.router.http.get(None, &format!("/create?{params}"), &[]).await.jsonp(CB)
    }

    fn socket(&self, created: &Value) -> Socket {
        Socket::new(created, self.daemon.http.clone())
    }
}

async fn round_trip(socket: &Socket, text: &str) {
    socket.send_text(text).await;
    assert_eq!(socket.receive(1).await[0]["data"], text);
}

/// A create on a fleet on `redis`, and a message there and back.
async fn round_trip_through(redis: &[&str]) {
    let fleet = FleetOn::start(redis).await;
    let created = fleet.create().await;
    assert_eq!(created["ok"], true, "{created}");
    round_trip(&fleet.socket(&created), "over the wire").await;
}

/// A command to a Redis or a Sentinel on `port`.
async fn ask<T: redis::FromRedisValue>(port: u16, command: &mut redis::Cmd) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    command.query_async(&mut client.get_multiplexed_async_connection().await?).await
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

#[actix_web::test]
async fn an_unreachable_redis_at_start_is_logged_once_not_every_retry() {
    let tokens = Tokens::new();
    let log = std::env::temp_dir().join(format!("polysocket-modes-{}-{}.log", std::process::id(), free_port()));
    let unreachable = format!("redis://127.0.0.1:{}", free_port());
    let router =
        Process::start_logging_to("router", free_port(), &["--redis", &unreachable, "--tokens", tokens.path()], &log);
    router.http.wait_until_ok("/healthz", Duration::from_secs(20)).await;
    // Retried every second: four attempts at least, and one warning.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert_eq!(logged.matches("cannot store tokens yet").count(), 1, "{logged}");
}

#[actix_web::test]
async fn a_router_that_reached_redis_stays_ready_though_nothing_asked_before_the_outage() {
    let mut redis = RedisServer::start();
    let log = std::env::temp_dir().join(format!("polysocket-modes-{}-{}.log", std::process::id(), free_port()));
    let router = Process::start_logging_to("router", free_port(), &["--redis", &redis.url()], &log);
    eventually("the router to reach Redis", Duration::from_secs(20), || async {
        std::fs::read_to_string(&log).ok()?.contains("reached the fleet").then_some(())
    })
    .await;
    let _ = std::fs::remove_file(&log);
    // Redis goes before anything asked /readyz: the router had reached it.
    redis.kill();
    let ready = router.http.get(None, "/readyz", &[]).await;
    assert_eq!((ready.status, ready.body.starts_with("ready; fleet unreachable")), (200, true), "{}", ready.body);
}

#[actix_web::test]
async fn a_fleet_follows_a_sentinel_failover_under_load() {
    let mut primary = RedisServer::start();
    let replica = RedisServer::start_replica_of(&primary);
    let sentinels: Vec<Sentinel> = (0..3).map(|_| Sentinel::start("polysocket", &primary)).collect();
    // A failover needs a replica in sync that every sentinel knows of.
    eventually("the replica to be in sync and known to the sentinels", Duration::from_secs(30), || async {
        let info: String = ask(replica.port(), redis::cmd("INFO").arg("replication")).await.ok()?;
        for sentinel in &sentinels {
            let port = sentinel.address().rsplit(':').next()?.parse().ok()?;
            let known: Vec<redis::Value> =
                ask(port, redis::cmd("SENTINEL").arg("REPLICAS").arg("polysocket")).await.ok()?;
            known.first()?;
        }
        info.contains("master_link_status:up").then_some(())
    })
    .await;
    let addresses: Vec<String> = sentinels.iter().map(Sentinel::address).collect();
    let fleet = FleetOn::start(&["--redis", &format!("redis+sentinel://{}/polysocket", addresses.join(","))]).await;
    let bridged = fleet.socket(&fleet.create().await);
    round_trip(&bridged, "before").await;

    // Creates (each socket closed at once, so the limit of ten never refuses
    // one) and messages on the socket opened before, while the primary dies.
    let load_done = Cell::new(false);
    let creates: RefCell<Vec<(Instant, bool)>> = RefCell::default();
    let create_load = async {
        while !load_done.get() {
            let created = fleet.create().await;
            let opened = created["ok"] == true;
            if opened {
                assert_eq!(fleet.socket(&created).send_get(&[("t", "c")]).await.status, 201);
            }
            creates.borrow_mut().push((Instant::now(), opened));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let messages = async {
        let mut sent = 0;
        while !load_done.get() {
            sent += 1;
            round_trip(&bridged, &format!("message {sent}")).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sent
    };
    let failover = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        primary.kill();
        let sentinel_port: u16 = addresses[0].rsplit(':').next().unwrap().parse().unwrap();
        let promoted = eventually("the sentinels to promote the replica", Duration::from_secs(30), || async {
            let named: Vec<String> =
                ask(sentinel_port, redis::cmd("SENTINEL").arg("GET-MASTER-ADDR-BY-NAME").arg("polysocket"))
                    .await
                    .ok()?;
            (named.get(1)? == &replica.port().to_string()).then(Instant::now)
        })
        .await;
        eventually("creates to succeed on the new primary", Duration::from_secs(15), || async {
            creates.borrow().iter().any(|&(at, opened)| opened && at > promoted).then_some(())
        })
        .await;
        // And keep succeeding.
        tokio::time::sleep(Duration::from_secs(2)).await;
        load_done.set(true);
        promoted
    };
    let ((), sent, promoted) = futures_util::join!(create_load, messages, failover);
    assert!(sent > 20, "messages flowed throughout: {sent}");
    let after: Vec<bool> = creates.borrow().iter().filter(|(at, _)| *at > promoted).map(|(_, ok)| *ok).collect();
    let recovered_at = after.iter().position(|ok| *ok).unwrap();
    assert!(after[recovered_at..].iter().all(|ok| *ok), "every create succeeds once one has: {after:?}");
    assert!(creates.borrow().iter().any(|(_, ok)| !ok), "the load ran through the primary's death");

    // No slot leaked: with every socket closed, exactly ten open again.
    assert_eq!(bridged.send_get(&[("t", "c")]).await.status, 201);
    let held = RefCell::new(Vec::new());
    eventually("all ten slots to be free", Duration::from_secs(10), || async {
        while held.borrow().len() < 10 {
            let created = fleet.create().await;
            if created["ok"] != true {
                return None;
            }
            held.borrow_mut().push(created);
        }
        Some(())
    })
    .await;
    assert_eq!(fleet.create().await["error"], "connection limit reached");
}

#[actix_web::test]
async fn a_fleet_works_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    // Every slot served before the fleet starts.
    eventually("the cluster to serve every slot", Duration::from_secs(30), || async {
        for &port in cluster.ports() {
            let info: String = ask(port, redis::cmd("CLUSTER").arg("INFO")).await.ok()?;
            info.contains("cluster_state:ok").then_some(())?;
        }
        Some(())
    })
    .await;
    let fleet = FleetOn::start(&["--redis", &cluster.url()]).await;
    // Creates, messages both ways, and the token's limit of ten held across
    // the nodes (the counts live in one slot, the inboxes in others).
    let mut sockets = Vec::new();
    for n in 0..10 {
        let created = fleet.create().await;
        assert_eq!(created["ok"], true, "create {n}: {created}");
        sockets.push(fleet.socket(&created));
    }
    assert_eq!(fleet.create().await["error"], "connection limit reached");
    for (n, socket) in sockets.iter().enumerate() {
        round_trip(socket, &format!("through the cluster {n}")).await;
    }
    assert_eq!(sockets[0].send_get(&[("t", "c")]).await.status, 201);
    let reopened = eventually("the closed socket's slot to come back", Duration::from_secs(10), || async {
        let created = fleet.create().await;
        (created["ok"] == true).then_some(created)
    })
    .await;
    round_trip(&fleet.socket(&reopened), "in the freed slot").await;
    assert_eq!(fleet.create().await["error"], "connection limit reached");
}

/// Times Redis has run `command` since it started.
async fn calls(port: u16, command: &str) -> u64 {
    let stats: String = ask(port, redis::cmd("INFO").arg("commandstats")).await.unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    stats.lines().find_map(|line| line.strip_prefix(&prefix)?.split(',').next()?.parse().ok()).unwrap_or(0)
}

#[actix_web::test]
async fn busy_pooled_connections_are_not_checked_and_a_broken_one_is_replaced() {
    use polysocket_common::fleet::{Fleet, RedisFleet};
    let mut redis = RedisServer::start();
    let fleet = RedisFleet::new(&redis.url()).unwrap();
    // deadpool-redis would check the connection with a PING before each.
    for _ in 0..100 {
        fleet.tokens().await.unwrap();
    }
    let checks = calls(redis.port(), "ping").await;
    assert!(checks <= 1, "{checks} checks for 100 commands back to back");

    // A restart breaks the connection while it is trusted: the command that
    // finds out fails, and the next one gets a new connection.
    redis.restart();
    let mut failed = 0;
    for _ in 0..3 {
        failed += u32::from(fleet.tokens().await.is_err());
    }
    assert!(failed <= 1, "{failed} of 3 commands failed after a restart");

    // An idle connection is checked before use, so a restart while it was
    // idle costs no command at all.
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restart();
    fleet.tokens().await.expect("an idle connection is checked and replaced");
}
