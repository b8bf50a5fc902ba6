//! Both fleet backends agree on a hand-off's deadlines: a reply after the
//! request's `expires_at_ms` on the fleet's clock is refused (`Ok(false)`,
//! so the daemon closes what it opened) whether or not a router still
//! listens, and one before it is heard. The Redis fleet reads Redis's
//! `TIME`, so the clocks of the machines around it do not decide.

use polysocket_common::fleet::{DaemonInfo, Fleet, Heartbeat, MemoryFleet, RedisFleet};
use polysocket_common::wire::{EstablishReply, EstablishRequest};
use polysocket_tests::redis_server::RedisServer;
use std::sync::Arc;
use std::time::Duration;

fn request(id: &str, accept_by_ms: u64, expires_at_ms: u64) -> EstablishRequest {
    serde_json::from_value(serde_json::json!({
        "id": id, "reply_to": "", "accept_by_ms": accept_by_ms, "expires_at_ms": expires_at_ms,
        "target": "ws://example.com/", "origin": null, "protocols": [], "client_ip": null, "token": "t",
    }))
    .expect("a request")
}

async fn register(fleet: &dyn Fleet, daemon: &DaemonInfo) {
    let holdings = Vec::new;
    let beat = Heartbeat {
        daemon,
        min_interval: Duration::from_secs(1),
        interval: Duration::from_secs(1),
        registered_before: false,
        holdings: &holdings,
        reconcile: false,
    };
    fleet.heartbeat(&beat).await.expect("registered");
}

/// A router waits on `router`, a daemon answers on `daemon` (another client
/// of the same fleet, as another process would be).
async fn deadlines_agree(router: Arc<dyn Fleet>, daemon: Arc<dyn Fleet>) {
    let info = DaemonInfo { id: "d1".into(), fqdn: "d1.test".into(), capacity: 10 };
    register(daemon.as_ref(), &info).await;
    let open = |id: &str| EstablishReply::Open {
        request_id: id.into(),
        fqdn: "s.d1.test".into(),
        socket: "0".repeat(32),
        protocol: String::new(),
    };

    // In time: the reply is heard and the router gets it.
    let now = router.now_ms();
    let waiting = {
        let router = router.clone();
        actix_web::rt::spawn(async move { router.establish("d1", request("in-time", now + 2000, now + 4000)).await })
    };
    let taken = daemon.inbox("d1").next_request().await.expect("inbox").expect("the request");
    assert!(daemon.reply(&taken, open("in-time")).await.expect("reply"), "heard");
    assert!(matches!(waiting.await.unwrap(), Ok(EstablishReply::Open { .. })));

    // Past its deadline on the fleet's clock, while the router still waits
    // out its grace: refused, so the daemon undoes the open.
    let now = router.now_ms();
    let waiting = {
        let router = router.clone();
        actix_web::rt::spawn(async move { router.establish("d1", request("late", now + 2000, now + 300)).await })
    };
    let taken = daemon.inbox("d1").next_request().await.expect("inbox").expect("the request");
    actix_web::rt::time::sleep(Duration::from_millis(350)).await;
    assert!(!daemon.reply(&taken, open("late")).await.expect("reply"), "a late outcome is refused");
    assert!(waiting.await.unwrap().is_err(), "the router times out");
}

#[actix_web::test]
async fn memory_fleet_refuses_late_replies() {
    let fleet = MemoryFleet::new();
    deadlines_agree(fleet.clone(), fleet).await;
}

#[actix_web::test]
async fn redis_fleet_refuses_late_replies_on_redis_time() {
    let redis = RedisServer::start();
    let router = RedisFleet::new(&redis.url()).expect("redis url");
    router.listen_for_replies().await;
    let daemon = RedisFleet::new(&redis.url()).expect("redis url");
    // Reading the offset needs one script call; the heartbeat is one.
    deadlines_agree(router, daemon).await;
}
