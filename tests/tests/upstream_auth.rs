//! Upstreams that authenticate the WebSocket handshake: a token's operator-held
//! headers, and a client's bearer forwarded as `Authorization` for tokens that
//! allow it, tried against a Tachyon-like server through a real Redis fleet.

mod support;

use actix_web::http::header::AUTHORIZATION;
use polysocket_common::token::TokenRecord;
use polysocket_tests::tachyon::{ACCESS_TOKEN, PROTOCOL};
use serde_json::{Value, json};
use std::time::Duration;
use support::{Backend, CB, Options, Socket, Stack, default_tokens};

/// The defaults plus `tachyon`, which forwards bearers, and `keyed`, which
/// adds an API key upstream.
fn tokens() -> Vec<TokenRecord> {
    let mut tokens = default_tokens();
    tokens.extend(
        serde_json::from_value::<Vec<TokenRecord>>(json!([
            {"token": "tachyon", "targets": ["ws://127.0.0.1:*/*"], "origins": ["*"], "max_connections": 10,
             "forward_bearer": true},
            {"token": "keyed", "origins": ["*"], "max_connections": 10, "targets": [
                {"pattern": "ws://127.0.0.1:*/headers?to=api", "upstream_headers": {"X-Api-Key": "operator-key-42"}},
                "ws://127.0.0.1:*/*"]},
        ]))
        .unwrap(),
    );
    tokens
}

async fn stack(backend: Backend) -> Stack {
    Stack::start(backend, Options { daemons: 1, tokens: tokens(), ..Options::default() }).await
}

/// The next message that is not a heartbeat.
async fn next(socket: &Socket) -> Value {
    socket.receive(1).await.remove(0)
}

#[actix_web::test]
async fn a_forwarded_bearer_reaches_a_tachyon_server_that_keeps_the_socket_alive() {
    let stack = stack(Backend::Redis).await;
    let target = stack.upstream.url("/tachyon?ping_ms=200");
    let params = [
        ("cb", CB),
        ("from", "tests"),
        ("target", target.as_str()),
        ("token", "tachyon"),
        ("protocols", "v1.tachyon,v0.tachyon"),
        ("bearer", ACCESS_TOKEN),
    ];
    let created = stack.create(&params, &[]).await.jsonp(CB);
    assert_eq!(created["protocol"], PROTOCOL, "{created}");
    assert!(!created.to_string().contains(ACCESS_TOKEN), "the answer never echoes the bearer");
    let socket = stack.socket_from(&created);

    let request = json!({"type": "request", "commandId": "system/serverStats", "messageId": "m1"});
    socket.send_text(&request.to_string()).await;
    let answer: Value = serde_json::from_str(next(&socket).await["data"].as_str().unwrap()).unwrap();
    assert_eq!(answer["echo"], request);

    // The server pings every 200 ms and closes (1008) after one unanswered
    // ping: still open and answering after many pings means the bridge
    // answered them all.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    socket.send_text(r#"{"type":"request","messageId":"m2"}"#).await;
    let answer: Value = serde_json::from_str(next(&socket).await["data"].as_str().unwrap()).unwrap();
    assert_eq!(answer["echo"]["messageId"], "m2");
    assert!(answer["pongs"].as_u64().unwrap() >= 5, "pongs answered: {answer}");

    // Bad JSON: the server closes with 1008 and says why; the client sees both.
    socket.send_text("{not json").await;
    let close = next(&socket).await;
    assert_eq!(close["type"], "close", "{close}");
    assert_eq!(close["code"], 1008);
    assert!(close["reason"].as_str().unwrap().starts_with("cannot parse JSON"), "{close}");
}

#[actix_web::test]
async fn an_upstream_that_refuses_the_handshake_says_so_with_its_status() {
    let stack = stack(Backend::Redis).await;
    let target = stack.upstream.url("/tachyon");
    let params = [("from", "tests"), ("target", target.as_str()), ("token", "tachyon"), ("protocols", PROTOCOL)];
    let refused = stack.create(&params, &[]).await;
    assert_eq!(refused.status, 502);
    assert_eq!(
        refused.json(),
        json!({"ok": false, "error": "upstream handshake failed: HTTP 401", "upstream_status": 401})
    );
    stack.router.wait_for_metric("polysocket_creates_total{outcome=\"upstream_rejected\"} 1").await;

    let mut wrong = params.to_vec();
    wrong.push(("bearer", "not-the-token"));
    assert_eq!(stack.create(&wrong, &[]).await.json()["upstream_status"], 401);
}

#[actix_web::test]
async fn a_token_without_forward_bearer_cannot_forward_one() {
    let stack = stack(Backend::Redis).await;
    let target = stack.upstream.url("/headers");
    let secret = "client-secret-1";
    let params = [("from", "tests"), ("target", target.as_str()), ("token", "dev"), ("bearer", secret)];
    let refused = stack.create(&params, &[]).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["error"], "bearer not allowed: this token does not forward credentials");
    assert!(!refused.body.contains(secret));
    // Nor through the header.
    let params = [("from", "tests"), ("target", target.as_str()), ("token", "dev")];
    let bearer = format!("Bearer {secret}");
    let refused = stack.create(&params, &[("authorization", &bearer)]).await;
    assert_eq!(refused.status, 403);
    // An operator header is not a client's to replace.
    let params = [("from", "tests"), ("target", target.as_str()), ("token", "keyed"), ("bearer", secret)];
    assert_eq!(stack.create(&params, &[]).await.status, 403);
    stack.router.wait_for_metric("polysocket_creates_total{outcome=\"refused\"} 3").await;
    // A malformed bearer is the client's mistake, and is not echoed either.
    let params = [("from", "tests"), ("target", target.as_str()), ("token", "tachyon"), ("bearer", "a\r\nX-Evil: 1")];
    let invalid = stack.create(&params, &[]).await;
    assert_eq!(invalid.status, 400);
    assert!(!invalid.body.contains("X-Evil"), "{}", invalid.body);
}

/// `curl -X POST -H "Authorization: Bearer ..." -d from=... -d target=...`
#[actix_web::test]
async fn curl_can_post_create_with_an_authorization_header() {
    let stack = stack(Backend::Redis).await;
    let target = stack.upstream.url("/tachyon");
    let form = [("from", "curl"), ("target", target.as_str()), ("token", "tachyon"), ("protocols", PROTOCOL)];
    let mut response = awc::Client::new()
        .post(format!("http://127.0.0.1:{}/create", stack.router.port()))
        .insert_header((AUTHORIZATION, format!("Bearer {ACCESS_TOKEN}")))
        .send_form(&form)
        .await
        .expect("POST /create");
    assert_eq!(response.status(), 200);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["protocol"], PROTOCOL, "{created}");
    let socket = stack.socket_from(&created);
    socket.send_text(r#"{"type":"request","messageId":"curl"}"#).await;
    let answer: Value = serde_json::from_str(next(&socket).await["data"].as_str().unwrap()).unwrap();
    assert_eq!(answer["echo"]["messageId"], "curl");

    // The form and the query together: a parameter given twice is refused.
    let duplicated = awc::Client::new()
        .post(format!("http://127.0.0.1:{}/create?from=curl", stack.router.port()))
        .send_form(&form)
        .await
        .expect("POST /create");
    assert_eq!(duplicated.status(), 400);
}

#[actix_web::test]
async fn operator_headers_reach_the_upstream_and_not_the_client() {
    for backend in [Backend::Memory, Backend::Redis] {
        let stack = stack(backend).await;
        let headers_seen = |path: &'static str| {
            let stack = &stack;
            async move {
                let target = stack.upstream.url(path);
                let params = [("cb", CB), ("from", "tests"), ("target", target.as_str()), ("token", "keyed")];
                let created = stack.create(&params, &[]).await.jsonp(CB);
                assert!(!created.to_string().contains("operator-key-42"));
                let socket = stack.socket_from(&created);
                let seen: Value = serde_json::from_str(next(&socket).await["data"].as_str().unwrap()).unwrap();
                (seen["x-api-key"].as_str().map(str::to_owned), seen["authorization"].as_str().map(str::to_owned))
            }
        };
        assert_eq!(headers_seen("/headers?to=api").await, (Some("operator-key-42".into()), Some(String::new())));
        // The same token's other pattern admits these, and grants nothing:
        // the key goes only where its own pattern admits.
        for elsewhere in ["/headers", "/headers?to=api&x=1", "/headers?to=other"] {
            assert_eq!(headers_seen(elsewhere).await, (Some(String::new()), Some(String::new())), "{elsewhere}");
        }
    }
}
