//! The seed API end to end, through real HTTP, against real upstream
//! WebSocket servers. Every behaviour test runs twice: with the in-memory
//! fleet (standalone) and with a router and two daemons sharing a real
//! `redis-server`.

mod support;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use polysocket_tests::eventually;
use serde_json::{Value, json};
use std::time::Duration;
use support::{Backend, CB, Options, Stack};

/// Extra request headers, as (name, value) pairs.
type Headers = &'static [(&'static str, &'static str)];

/// Generates one `#[actix_web::test]` per backend for each scenario.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod memory {
            $(#[actix_web::test] async fn $scenario() { super::$scenario(super::Backend::Memory).await })*
        }
        mod redis {
            $(#[actix_web::test] async fn $scenario() { super::$scenario(super::Backend::Redis).await })*
        }
    };
}

on_both_backends!(
    text_and_binary_round_trip,
    post_bodies,
    fragmented_upstream_message_arrives_whole,
    create_refusals,
    send_and_poll_errors,
    poll_heartbeat_and_supersede,
    upstream_close_is_delivered_then_socket_is_gone,
    upstream_sees_origin_protocols_and_client_address,
    ack_returns_unacknowledged_messages_again,
    answers_are_hardened_jsonp_or_plain_json,
);

async fn text_and_binary_round_trip(backend: Backend) {
    let stack = Stack::start(backend, Options::default()).await;
    let socket = stack.open("/echo").await;
    assert_eq!(socket.id.len(), 32, "socket ids carry a full UUID v4");
    assert_eq!(socket.protocol, "");

    socket.send_text("héllo ✓").await;
    let bytes = [0u8, 1, 2, 254, 255];
    let reply = socket.send_get(&[("t", "b"), ("d", &BASE64.encode(bytes))]).await;
    assert_eq!(reply.status, 201);

    let messages = socket.receive(2).await;
    assert_eq!(
        messages,
        [
            json!({"type": "text", "seq": 1, "data": "héllo ✓"}),
            json!({"type": "binary", "seq": 2, "data": BASE64.encode(bytes)}),
        ]
    );
}

async fn post_bodies(backend: Backend) {
    let stack = Stack::start(backend, Options::default()).await;
    let socket = stack.open("/echo").await;

    let form = socket.post("?cb=ps.cb_1", "application/x-www-form-urlencoded", b"t=t&d=from+a+form").await;
    assert_eq!((form.status, form.jsonp(CB)), (201, json!({"ok": true})));
    let text = socket.post("", "text/plain; charset=utf-8", "plain ✓".as_bytes()).await;
    assert_eq!((text.status, text.json()), (201, json!({"ok": true})));
    let binary = socket.post("", "application/octet-stream", &[9, 8, 7]).await;
    assert_eq!(binary.status, 201);
    let form_binary = socket.post("", "application/x-www-form-urlencoded", b"t=b&d=AQID").await;
    assert_eq!(form_binary.status, 201);
    // A form posted into a hidden iframe: the answer is a page handing the
    // JSON to the window that framed it, and text whose line breaks the
    // form would rewrite comes as a JSON string.
    let framed =
        socket.post("?frame=1", "application/x-www-form-urlencoded", b"t=j&d=%22two%5Cr%5Cnlines%5Cn%22").await;
    assert_eq!((framed.status, framed.header("content-type")), (201, "text/html; charset=utf-8"));
    assert_eq!(framed.header("content-security-policy"), "default-src 'none'; script-src 'unsafe-inline'");
    assert!(framed.body.ends_with(r#"<script>parent.postMessage("{\"ok\":true}","*")</script>"#), "{}", framed.body);
    let refused = socket.post("?frame=1", "application/x-www-form-urlencoded", b"t=j&d=two+lines").await;
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains(r#"\"error\":\"invalid d: t=j takes a JSON string\""#), "{}", refused.body);
    let bad_frame = socket.post("?frame=yes", "application/x-www-form-urlencoded", b"d=x").await;
    assert_eq!((bad_frame.status, bad_frame.json()["error"].clone()), (400, json!("invalid frame: must be 0 or 1")));

    let messages = socket.receive(5).await;
    assert_eq!(
        messages,
        [
            json!({"type": "text", "seq": 1, "data": "from a form"}),
            json!({"type": "text", "seq": 2, "data": "plain ✓"}),
            json!({"type": "binary", "seq": 3, "data": BASE64.encode([9, 8, 7])}),
            json!({"type": "binary", "seq": 4, "data": BASE64.encode([1, 2, 3])}),
            json!({"type": "text", "seq": 5, "data": "two\r\nlines\n"}),
        ]
    );

    let unsupported = socket.post("", "image/png", b"x").await;
    assert_eq!(unsupported.status, 415);
    let bad_utf8 = socket.post("", "text/plain", &[0xff, 0xfe]).await;
    assert_eq!(bad_utf8.status, 400);
}

async fn fragmented_upstream_message_arrives_whole(backend: Backend) {
    let stack = Stack::start(backend, Options::default()).await;
    let socket = stack.open("/fragmented").await;
    assert_eq!(socket.receive(1).await, [json!({"type": "text", "seq": 1, "data": "fragmented"})]);
}

async fn create_refusals(backend: Backend) {
    let stack = Stack::start(backend, Options::default()).await;
    let echo = stack.upstream.url("/echo");
    let error_of = |reply: polysocket_tests::http::Reply| {
        assert_eq!(reply.status, 200, "JSONP creates always answer 200: {reply:?}");
        let body = reply.jsonp(CB);
        assert_eq!(body["ok"], false, "{body}");
        body["error"].as_str().unwrap().to_owned()
    };
    let create = |target: String, token: &'static str, headers: Headers| {
        let stack = &stack;
        async move { stack.create(&[("cb", CB), ("from", "tests"), ("target", &target), ("token", token)], headers).await }
    };

    // Callback problems are plain-text 400s that never echo the callback.
    let bad_cb = stack.create(&[("cb", "alert(1)//"), ("from", "t"), ("target", &echo), ("token", "dev")], &[]).await;
    assert_eq!(bad_cb.status, 400);
    assert!(bad_cb.header("content-type").starts_with("text/plain"));
    assert!(!bad_cb.body.contains("alert"), "{}", bad_cb.body);

    let missing_from = stack.create(&[("cb", CB), ("target", &echo), ("token", "dev")], &[]).await;
    assert_eq!(error_of(missing_from), "missing from");
    let long_from = "x".repeat(65);
    let reply = stack.create(&[("cb", CB), ("from", &long_from), ("target", &echo), ("token", "dev")], &[]).await;
    assert_eq!(error_of(reply), "invalid from: must be 1-64 characters");

    let port = stack.upstream.port();
    let cases: Vec<(String, &'static str, Headers, &str)> = vec![
        (format!("http://127.0.0.1:{port}/echo"), "dev", &[], "invalid target: scheme must be ws or wss"),
        (format!("ws://u:p@127.0.0.1:{port}/echo"), "dev", &[], "invalid target: credentials are not allowed"),
        (format!("ws://127.0.0.1:{port}/echo#x"), "dev", &[], "invalid target: fragments are not allowed"),
        (echo.clone(), "nope", &[], "unknown token"),
        (echo.clone(), "strict", &[("origin", "https://evil.test")], "origin not allowed"),
        (echo.clone(), "strict", &[], "origin not allowed"),
        (stack.upstream.url("/headers"), "strict", &[("origin", "https://app.test")], "target not allowed"),
        (stack.upstream.url("/forbidden"), "dev", &[], "upstream handshake failed: HTTP 403"),
        (
            stack.upstream.url("/wrong-protocol"),
            "dev",
            &[],
            "upstream handshake failed: server selected a subprotocol that was not offered",
        ),
        (
            format!("ws://127.0.0.1:{}/", polysocket_tests::free_port()),
            "dev",
            &[],
            "upstream handshake failed: connection refused",
        ),
    ];
    for (target, token, headers, expected) in cases {
        assert_eq!(error_of(create(target.clone(), token, headers).await), expected, "{target} with {token}");
    }

    for method in [awc::http::Method::PUT, awc::http::Method::DELETE] {
        let refused = stack.router.request(method.clone(), None, "/create?token=dev").await;
        assert_eq!((refused.status, refused.header("allow")), (405, "GET, POST"), "{method}: {refused:?}");
        assert_eq!(refused.json()["error"], "method not allowed: use GET, POST");
    }

    // The origin may come from the Referer; the token's one slot is then taken.
    let first = create(echo.clone(), "strict", &[("referer", "https://app.test/page.html")]).await;
    assert_eq!(first.jsonp(CB)["ok"], true);
    let second = create(echo.clone(), "strict", &[("origin", "https://app.test")]).await;
    assert_eq!(error_of(second), "connection limit reached");

    // Failed handshakes gave their slots back: the dev token is not exhausted.
    assert_eq!(create(echo.clone(), "dev", &[]).await.jsonp(CB)["ok"], true);

    // Without a callback (curl), the status says what happened.
    let curl = stack.create(&[("from", "curl"), ("target", &echo), ("token", "nope")], &[]).await;
    assert_eq!((curl.status, curl.json()["error"].clone()), (403, json!("unknown token")));
}

async fn send_and_poll_errors(backend: Backend) {
    let stack = Stack::start(backend, Options::default()).await;
    let socket = stack.open("/echo").await;
    let error = |reply: polysocket_tests::http::Reply, status: u16| {
        assert_eq!(reply.status, status, "{reply:?}");
        reply.jsonp(CB)["error"].as_str().unwrap().to_owned()
    };
    assert_eq!(error(socket.send_get(&[("t", "t")]).await, 400), "missing d");
    assert_eq!(
        error(socket.send_get(&[("t", "x"), ("d", "a")]).await, 400),
        "invalid t: must be t (text), j (text as a JSON string), b (binary) or c (close)"
    );
    assert_eq!(error(socket.send_get(&[("t", "b"), ("d", "%%%")]).await, 400), "invalid d: not standard base64");
    assert_eq!(error(socket.poll_raw(&[("ttl", "soon")]).await, 400), "invalid ttl: must be milliseconds");
    assert_eq!(error(socket.poll_raw(&[("ack", "-1")]).await, 400), "invalid ack: must be a sequence number");

    // Invalid UTF-8 is refused, never turned into U+FFFD.
    let not_utf8 = socket.http_get(&format!("/s/{}?cb=c&d=%ff", socket.id)).await;
    assert_eq!((not_utf8.status, not_utf8.body.as_str()), (400, "malformed query string: not UTF-8"));
    let form = socket.post("", "application/x-www-form-urlencoded", b"t=t&d=%ff").await;
    assert_eq!((form.status, form.json()["error"].clone()), (400, json!("invalid d: text must be UTF-8")));

    let bad_cb = socket.http_get(&format!("/s/{}?cb=a(b)&d=x", socket.id)).await;
    assert_eq!((bad_cb.status, bad_cb.header("content-type")), (400, "text/plain; charset=utf-8"));
    let bad_cb = socket.http_get(&format!("/j/{}?cb=1x", socket.id)).await;
    assert_eq!(bad_cb.status, 400);

    let unknown = socket.http_get("/s/0123456789abcdef0123456789abcdef?cb=c&d=x").await;
    assert_eq!((unknown.status, unknown.jsonp("c")["error"].clone()), (403, json!("unknown socket")));
    let unknown = socket.http_get("/j/0123456789abcdef0123456789abcdef?cb=c").await;
    assert_eq!((unknown.status, unknown.jsonp("c")["error"].clone()), (403, json!("unknown socket")));

    use awc::http::Method;
    for (method, path, allowed) in [
        (Method::PUT, format!("/s/{}?d=x", socket.id), "GET, POST"),
        (Method::DELETE, format!("/s/{}", socket.id), "GET, POST"),
        (Method::POST, format!("/j/{}", socket.id), "GET"),
    ] {
        let refused = socket.request(method.clone(), &path).await;
        assert_eq!(refused.status, 405, "{method} {path}: {refused:?}");
        assert_eq!(refused.header("allow"), allowed);
        assert_eq!(refused.json()["error"], format!("method not allowed: use {allowed}"));
    }
    // Refused before it reaches the socket: nothing was sent or consumed.
    socket.send_text("after").await;
    assert_eq!(socket.receive(1).await, [json!({"type": "text", "seq": 1, "data": "after"})]);
}

async fn poll_heartbeat_and_supersede(backend: Backend) {
    let stack = Stack::start(backend, Options::default()).await;
    let socket = stack.open("/echo").await;

    let reply = socket.poll_raw(&[("ttl", "150")]).await;
    assert_eq!((reply.status, reply.jsonp(CB)), (200, json!({"ok": true, "messages": [{"type": "heartbeat"}]})));

    let socket = std::rc::Rc::new(socket);
    let waiting = actix_web::rt::spawn({
        let socket = socket.clone();
        async move { socket.poll_raw(&[("ttl", "20000")]).await }
    });
    // The first poll must be waiting on the daemon before the second takes over.
    let daemon = stack.daemons.iter().find(|d| socket.host.ends_with(&format!(".{}", d.fqdn))).unwrap();
    daemon.http.wait_for_metric("polysocket_polls_waiting 1").await;
    let newer = socket.poll_raw(&[("ttl", "300")]).await;
    assert_eq!(newer.jsonp(CB), json!({"ok": true, "messages": [{"type": "heartbeat"}]}));
    let older = waiting.await.unwrap();
    assert_eq!((older.status, older.jsonp(CB)["error"].clone()), (409, json!("superseded by a newer poll")));

    socket.send_text("still works").await;
    assert_eq!(socket.receive(1).await[0]["data"], "still works");
}

async fn upstream_close_is_delivered_then_socket_is_gone(backend: Backend) {
    let mut tokens = support::default_tokens();
    tokens[1].targets.push(serde_json::from_value(json!("ws://127.0.0.1:*/close")).unwrap());
    let stack = Stack::start(backend, Options { tokens, ..Options::default() }).await;
    let target = stack.upstream.url("/close");
    // The strict token has one slot: using it twice in a row proves the
    // first socket gave its slot back when it ended. The release is a Redis
    // round trip that starts as the close is delivered, so a create at once
    // after the close may still find the slot taken; it must not for long.
    for _ in 0..2 {
        let created = eventually("the token's one slot to be free", Duration::from_secs(2), || async {
            let reply = stack
                .create(
                    &[("cb", CB), ("from", "t"), ("target", &target), ("token", "strict")],
                    &[("origin", "https://app.test")],
                )
                .await;
            let created = reply.jsonp(CB);
            (created["error"] != "connection limit reached").then_some(created)
        })
        .await;
        let socket = stack.socket_from(&created);
        socket.send_text("please close").await;
        let messages = socket.receive(1).await;
        assert_eq!(messages, [json!({"type": "close", "seq": 1, "code": 4000, "reason": "bye"})]);
        let after = socket.poll_raw(&[("ttl", "100")]).await;
        assert_eq!((after.status, after.jsonp(CB)["error"].clone()), (403, json!("unknown socket")));
        assert_eq!(socket.send_get(&[("d", "late")]).await.status, 403);
    }
}

async fn upstream_sees_origin_protocols_and_client_address(backend: Backend) {
    let stack = Stack::start(backend, Options::default()).await;
    let target = stack.upstream.url("/headers");
    let created = stack
        .create(
            &[("cb", CB), ("from", "t"), ("target", &target), ("token", "dev"), ("protocols", "v1.test, v2.test")],
            &[("origin", "https://page.test")],
        )
        .await
        .jsonp(CB);
    assert_eq!(created["protocol"], "v2.test", "{created}");
    let socket = stack.socket_from(&created);
    let seen: Value = serde_json::from_str(socket.receive(1).await[0]["data"].as_str().unwrap()).unwrap();
    assert_eq!(
        seen,
        json!({"origin": "https://page.test", "x-forwarded-for": "127.0.0.1", "protocol": "v2.test",
               "authorization": "", "x-api-key": ""})
    );
}

async fn ack_returns_unacknowledged_messages_again(backend: Backend) {
    let stack = Stack::start(backend, Options::default()).await;
    let socket = stack.open("/say?n=3&text=m").await;
    let first = socket.receive(3).await;
    assert_eq!(first.iter().map(|m| m["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3]);
    // The client lost that answer: re-polling with its old ack returns the same messages.
    let again = socket.poll_raw(&[("ack", "1"), ("ttl", "100")]).await.jsonp(CB);
    assert_eq!(again["messages"], json!([first[1], first[2]]));
    // A poll without ack acknowledges what was returned; nothing is left.
    let empty = socket.poll_raw(&[("ttl", "100")]).await.jsonp(CB);
    assert_eq!(empty["messages"], json!([{"type": "heartbeat"}]));
}

async fn answers_are_hardened_jsonp_or_plain_json(backend: Backend) {
    let stack = Stack::start(backend, Options::default()).await;
    let socket = stack.open("/echo").await;
    socket.send_text("line\u{2028}sep\u{2029}</script>").await;
    let reply = socket.poll_raw(&[("ttl", "2000")]).await;
    assert!(reply.body.starts_with("/**/ps.cb_1("), "{}", reply.body);
    assert!(reply.body.contains(r"line\u2028sep\u2029\u003c/script>"), "{}", reply.body);
    assert_eq!(reply.jsonp(CB)["messages"][0]["data"], "line\u{2028}sep\u{2029}</script>");

    let plain = socket.http_get(&format!("/j/{}?ttl=50", socket.id)).await;
    assert_eq!(plain.json(), json!({"ok": true, "messages": [{"type": "heartbeat"}]}));
    assert_eq!(plain.header("x-content-type-options"), "nosniff");
    assert_eq!(plain.header("cache-control"), "no-store");
}

#[actix_web::test]
async fn redis_fleet_spreads_sockets_over_daemons() {
    let stack = Stack::start(Backend::Redis, Options::default()).await;
    let mut per_daemon = std::collections::HashMap::<String, usize>::new();
    for _ in 0..10 {
        let socket = stack.open("/echo").await;
        let daemon = socket.host.split_once('.').unwrap().1.to_owned();
        *per_daemon.entry(daemon).or_default() += 1;
        // Every socket works on the daemon it was placed on.
        socket.send_text("placed").await;
        assert_eq!(socket.receive(1).await[0]["data"], "placed");
    }
    let mut counts: Vec<usize> = per_daemon.values().copied().collect();
    counts.sort();
    assert_eq!(counts, [5, 5], "least-loaded placement alternates between equal daemons: {per_daemon:?}");
}

#[actix_web::test]
async fn no_daemon_and_no_capacity() {
    let none = Stack::start(Backend::Memory, Options { daemons: 0, ..Options::default() }).await;
    let target = none.upstream.url("/echo");
    let params = [("cb", CB), ("from", "t"), ("target", target.as_str()), ("token", "dev")];
    assert_eq!(none.create(&params, &[]).await.jsonp(CB)["error"], "no daemon available");

    let full = Stack::start(
        Backend::Redis,
        Options { daemons: 1, daemon_args: vec!["--allow-private-targets", "--capacity", "1"], ..Options::default() },
    )
    .await;
    let _only = full.open("/echo").await;
    let target = full.upstream.url("/echo");
    let params = [("cb", CB), ("from", "t"), ("target", target.as_str()), ("token", "dev")];
    assert_eq!(full.create(&params, &[]).await.jsonp(CB)["error"], "no capacity");
}

#[actix_web::test]
async fn non_public_targets_are_refused_by_default() {
    let stack = Stack::start(Backend::Memory, Options { daemons: 1, daemon_args: vec![], ..Options::default() }).await;
    let target = stack.upstream.url("/echo");
    let params = [("cb", CB), ("from", "t"), ("target", target.as_str()), ("token", "dev")];
    assert_eq!(stack.create(&params, &[]).await.jsonp(CB)["error"], "target address is not public");
    // A token may name the private networks it reaches on purpose.
    let lan = [("cb", CB), ("from", "t"), ("target", target.as_str()), ("token", "lan")];
    let socket = stack.socket_from(&stack.create(&lan, &[]).await.jsonp(CB));
    socket.send_text("inside").await;
    assert_eq!(socket.receive(1).await[0]["data"], "inside");
}

#[actix_web::test]
async fn metrics_count_sockets_creates_and_traffic() {
    let stack = Stack::start(Backend::Memory, Options { daemons: 1, ..Options::default() }).await;
    let socket = stack.open("/echo").await;
    socket.send_text("four").await;
    socket.receive(1).await;
    let _ = stack.create(&[("cb", CB), ("from", "t")], &[]).await;

    let metric = |text: &str, line: &str| text.lines().any(|l| l == line);
    let daemon = stack.daemons[0].http.get(None, "/metrics", &[]).await;
    assert!(daemon.header("content-type").starts_with("text/plain; version=0.0.4"));
    for line in [
        "polysocket_sockets_open 1",
        r#"polysocket_messages_total{direction="upstream"} 1"#,
        r#"polysocket_messages_total{direction="client"} 1"#,
        r#"polysocket_bytes_total{direction="client"} 4"#,
        "polysocket_upstream_handshake_seconds_count 1",
        "polysocket_polls_waiting 0",
    ] {
        assert!(metric(&daemon.body, line), "daemon metrics lack {line:?}:\n{}", daemon.body);
    }
    let router = stack.router.get(None, "/metrics", &[]).await;
    for line in [r#"polysocket_creates_total{outcome="ok"} 1"#, r#"polysocket_creates_total{outcome="invalid"} 1"#] {
        assert!(metric(&router.body, line), "router metrics lack {line:?}:\n{}", router.body);
    }
}

#[actix_web::test]
async fn creates_are_rate_limited_per_client() {
    let options = Options { daemons: 1, router_args: vec!["--create-rate-per-ip", "1"], ..Options::default() };
    let stack = Stack::start(Backend::Memory, options).await;
    let target = stack.upstream.url("/echo");
    let jsonp = [("cb", CB), ("from", "t"), ("target", target.as_str()), ("token", "dev")];
    // A burst of ten, then the limit (a slow machine may refill one now and then).
    let mut answers = Vec::new();
    for _ in 0..20 {
        let reply = stack.create(&jsonp, &[]).await;
        assert_eq!(reply.status, 200, "JSONP callers still get their callback");
        answers.push(reply.jsonp(CB));
    }
    assert!(answers[..10].iter().all(|a| a["ok"] == true), "{answers:?}");
    let limited: Vec<&Value> = answers.iter().filter(|a| a["ok"] == false).collect();
    assert!(!limited.is_empty(), "twenty creates at once from one client: {answers:?}");
    assert!(limited.iter().all(|a| a["error"] == "rate limited: retry in 1s"), "{limited:?}");
    assert!(limited.iter().all(|a| a["retryable"] == true), "worth retrying after a while: {limited:?}");
    let curl = stack.create(&jsonp[1..], &[]).await;
    assert_eq!((curl.status, curl.header("retry-after")), (429, "1"));
}

#[actix_web::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let seen_through = |router_args: Vec<&'static str>| async move {
        let stack = Stack::start(Backend::Memory, Options { daemons: 1, router_args, ..Options::default() }).await;
        let target = stack.upstream.url("/headers");
        let params = [("cb", CB), ("from", "t"), ("target", target.as_str()), ("token", "dev")];
        let created = stack.create(&params, &[("x-forwarded-for", "203.0.113.9")]).await.jsonp(CB);
        let socket = stack.socket_from(&created);
        let seen: Value = serde_json::from_str(socket.receive(1).await[0]["data"].as_str().unwrap()).unwrap();
        seen["x-forwarded-for"].as_str().unwrap().to_owned()
    };
    assert_eq!(seen_through(vec![]).await, "127.0.0.1", "a forged header from anyone is ignored");
    assert_eq!(seen_through(vec!["--trusted-proxies", "127.0.0.1/32"]).await, "203.0.113.9");
}

#[actix_web::test]
async fn wss_upstreams_are_verified_and_a_private_ca_can_be_trusted() {
    let (upstream, ca_pem) = polysocket_tests::upstream::UpstreamServer::start_tls();
    let ca_file = std::env::temp_dir().join(format!("polysocket-ca-{}-{}.pem", std::process::id(), upstream.port()));
    std::fs::write(&ca_file, ca_pem).unwrap();
    let mut tokens = support::default_tokens();
    tokens[0].targets.push(serde_json::from_value(json!("wss://localhost:*/*")).unwrap());
    let target = format!("wss://localhost:{}/echo", upstream.port());
    let params = [("cb", CB), ("from", "t"), ("target", target.as_str()), ("token", "dev")];

    // The made-up CA is nobody's root: the handshake fails on the certificate.
    let untrusting =
        Stack::start(Backend::Memory, Options { daemons: 1, tokens: tokens.clone(), ..Options::default() }).await;
    let refused = untrusting.create(&params, &[]).await.jsonp(CB);
    let error = refused["error"].as_str().unwrap();
    assert!(error.starts_with("upstream handshake failed") && error.contains("certificate"), "{error}");

    // Trusted through --ca-file, the same upstream bridges normally.
    // The path must outlive the stack's configuration: leaking it is fine in a test.
    let ca_arg: &'static str = ca_file.to_str().unwrap().to_owned().leak();
    let daemon_args = vec!["--allow-private-targets", "--ca-file", ca_arg];
    let trusting =
        Stack::start(Backend::Memory, Options { daemons: 1, tokens, daemon_args, ..Options::default() }).await;
    let socket = trusting.socket_from(&trusting.create(&params, &[]).await.jsonp(CB));
    socket.send_text("over TLS").await;
    assert_eq!(socket.receive(1).await[0]["data"], "over TLS");
    let _ = std::fs::remove_file(&ca_file);
}
