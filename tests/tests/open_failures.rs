//! A create whose upstream does not open says who failed, through a real
//! Redis between the router and the daemons: the daemon's reason travels
//! typed, so the client gets the right status and the router counts the
//! right outcome (`polysocket_creates_total{outcome}`).

mod support;

use polysocket_tests::free_port;
use serde_json::Value;
use support::{Backend, Options, Stack};

/// Creates a socket to `target` with `token`, without a callback (as curl
/// would), and returns the status and the JSON answer.
async fn create(stack: &Stack, token: &str, target: &str) -> (u16, Value) {
    let reply = stack.create(&[("from", "tests"), ("target", target), ("token", token)], &[]).await;
    (reply.status, reply.json())
}

async fn outcome_counted(stack: &Stack, outcome: &str) {
    stack.router.wait_for_metric(&format!("polysocket_creates_total{{outcome=\"{outcome}\"}} 1")).await;
}

/// One daemon that refuses non-public targets unless the token allows them
/// (`lan` does, `dev` does not), with a short handshake timeout.
async fn stack(extra_router_args: Vec<&'static str>) -> Stack {
    let options = Options {
        daemons: 1,
        daemon_args: vec!["--handshake-timeout", "500ms", "--capacity", "1"],
        router_args: extra_router_args,
        ..Options::default()
    };
    Stack::start(Backend::Redis, options).await
}

#[actix_web::test]
async fn each_open_failure_says_who_failed() {
    let stack = stack(vec![]).await;

    // The daemon's address policy: the client's request is refused.
    let (status, answer) = create(&stack, "dev", &stack.upstream.url("/echo")).await;
    assert_eq!((status, answer["error"].as_str()), (403, Some("target address is not public")));
    assert_eq!(answer.get("retryable"), None);
    outcome_counted(&stack, "refused").await;

    // Nothing listens there.
    let closed = format!("ws://127.0.0.1:{}/", free_port());
    let (status, answer) = create(&stack, "lan", &closed).await;
    assert_eq!((status, answer["error"].as_str()), (502, Some("upstream handshake failed: connection refused")));
    outcome_counted(&stack, "upstream_unreachable").await;

    // The upstream answers the handshake with 403.
    let (status, answer) = create(&stack, "lan", &stack.upstream.url("/forbidden")).await;
    assert_eq!((status, answer["error"].as_str()), (502, Some("upstream handshake failed: HTTP 403")));
    outcome_counted(&stack, "upstream_rejected").await;

    // Connected, but the upstream never answers the handshake.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("ws://{}/", silent.local_addr().unwrap());
    let (status, answer) = create(&stack, "lan", &target).await;
    assert_eq!((status, answer["error"].as_str()), (504, Some("upstream handshake failed: timeout")));
    outcome_counted(&stack, "upstream_timeout").await;
}

#[actix_web::test]
async fn a_full_daemon_refuses_and_the_client_may_retry() {
    let stack = stack(vec!["--create-attempts", "1"]).await;
    let (status, _) = create(&stack, "lan", &stack.upstream.url("/echo")).await;
    assert_eq!(status, 200, "the daemon's one slot is taken");
    // Redis forgets the daemon's load (as after a restart that lost it): the
    // fleet thinks there is room, the daemon knows better.
    let redis = redis::Client::open(stack.redis_url()).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::AsyncCommands::keys(&mut conn, "{ps}:daemon:*").await.unwrap();
    assert_eq!(keys.len(), 1);
    let id = keys[0].trim_start_matches("{ps}:daemon:");
    let _: () = redis::AsyncCommands::hset(&mut conn, &keys[0], "load", 0).await.unwrap();
    let _: () = redis::AsyncCommands::zadd(&mut conn, "{ps}:pick", id, 0).await.unwrap();

    let (status, answer) = create(&stack, "lan", &stack.upstream.url("/echo")).await;
    assert_eq!((status, answer["error"].as_str()), (503, Some("daemon is full")));
    assert_eq!(answer["retryable"], true);
    outcome_counted(&stack, "no_capacity").await;
}

#[actix_web::test]
async fn an_upstream_slower_than_the_accept_timeout_still_opens() {
    // The daemon answers a quick open with its outcome alone; one still
    // opening after 250 ms (or half the accept window) is accepted first,
    // so the router waits for it instead of passing the daemon over.
    let options = Options {
        daemons: 1,
        router_args: vec!["--accept-timeout", "400ms", "--create-attempts", "1"],
        ..Options::default()
    };
    let stack = Stack::start(Backend::Redis, options).await;
    let (status, answer) = create(&stack, "dev", &stack.upstream.url("/slow?ms=800")).await;
    assert_eq!((status, answer["ok"].as_bool()), (200, Some(true)), "{answer}");
    outcome_counted(&stack, "ok").await;
}
