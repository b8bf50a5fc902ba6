//! Streaming receive on `/j` (NDJSON for curl, Server-Sent Events for
//! EventSource) and CORS on `/s` and `/j`, against real daemons.

mod support;

use serde_json::{Value, json};
use support::{Backend, CB, Options, Socket, Stack};

async fn stack(daemon_args: Vec<&'static str>) -> Stack {
    let mut args = vec!["--allow-private-targets"];
    args.extend(daemon_args);
    Stack::start(Backend::Memory, Options { daemons: 1, daemon_args: args, ..Options::default() }).await
}

/// The `data:` of an SSE block, parsed, and its `id:`.
fn event(block: &str) -> (Option<u64>, Value) {
    let mut id = None;
    let mut data = None;
    for line in block.lines() {
        if let Some(value) = line.strip_prefix("id: ") {
            id = Some(value.parse().unwrap());
        } else if let Some(value) = line.strip_prefix("data: ") {
            data = Some(serde_json::from_str(value).unwrap());
        }
    }
    (id, data.unwrap_or_else(|| panic!("no data in {block:?}")))
}

#[actix_web::test]
async fn ndjson_follows_a_socket_live_until_its_close() {
    let stack = stack(vec![]).await;
    let socket = stack.open("/say?n=2&text=m").await;
    let mut stream = socket.stream(&[("stream", "ndjson"), ("ttl", "300")], &[]).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("content-type"), "application/x-ndjson; charset=utf-8");
    assert_eq!(stream.header("x-accel-buffering"), "no");
    assert_eq!(stream.next_line().await, Some(json!({"type": "heartbeat"})), "the stream opens at once");
    assert_eq!(stream.next_line().await, Some(json!({"type": "text", "seq": 1, "data": "m-1"})));
    assert_eq!(stream.next_line().await, Some(json!({"type": "text", "seq": 2, "data": "m-2"})));
    // Live: a message sent now arrives on the same response.
    socket.send_text("live").await;
    assert_eq!(stream.next_line().await, Some(json!({"type": "text", "seq": 3, "data": "live"})));
    // Quiet: heartbeats every ttl.
    assert_eq!(stream.next_line().await, Some(json!({"type": "heartbeat"})));
    // The close is the last line, and the stream ends with it.
    assert_eq!(socket.send_get(&[("t", "c"), ("code", "1000"), ("reason", "bye")]).await.status, 201);
    let close = loop {
        let line = stream.next_line().await.expect("the close comes before the end");
        if line["type"] != "heartbeat" {
            break line;
        }
    };
    assert_eq!(close, json!({"type": "close", "seq": 4, "code": 1000, "reason": "bye"}));
    assert_eq!(stream.next_line().await, None);
    // Writing the close acknowledged nothing; acknowledging it lets the socket go.
    let acknowledging = socket.poll_raw(&[("ttl", "0"), ("ack", "4")]).await;
    assert_eq!((acknowledging.status, acknowledging.jsonp(CB)["error"].clone()), (403, json!("unknown socket")));
}

#[actix_web::test]
async fn a_stream_its_client_dropped_loses_neither_messages_nor_the_close() {
    let stack = stack(vec![]).await;
    let socket = stack.open("/echo").await;
    let mut stream = socket.stream(&[("stream", "ndjson"), ("ttl", "10000")], &[]).await;
    assert_eq!(stream.next_line().await, Some(json!({"type": "heartbeat"})));
    // Its client goes, as `curl -N` does on Ctrl-C. The daemon notices only
    // when a write fails, so the stream still takes what comes next.
    drop(stream);
    socket.send_text("after").await;
    assert_eq!(socket.send_get(&[("t", "c"), ("code", "1000"), ("reason", "bye")]).await.status, 201);
    // Polls without `ack` (their client read nothing) get both.
    let mut received = Vec::new();
    while !received.iter().any(|m: &Value| m["type"] == "close") {
        assert!(received.len() < 10, "no close in {received:?}");
        let answer = socket.poll_raw(&[("ttl", "2000")]).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        received.extend(
            answer.jsonp(CB)["messages"].as_array().unwrap().iter().filter(|m| m["type"] != "heartbeat").cloned(),
        );
    }
    assert_eq!(
        received,
        [
            json!({"type": "text", "seq": 1, "data": "after"}),
            json!({"type": "close", "seq": 2, "code": 1000, "reason": "bye"})
        ]
    );
}

#[actix_web::test]
async fn sse_resumes_from_last_event_id_without_loss_or_duplicates() {
    let stack = stack(vec![]).await;
    let socket = stack.open("/say?n=3&text=e").await;
    // An EventSource asks with Accept, not with stream=.
    let mut first = socket.stream(&[("ttl", "300")], &[("accept", "text/event-stream")]).await;
    assert_eq!(first.header("content-type"), "text/event-stream; charset=utf-8");
    let opening = first.next_event().await.unwrap();
    assert!(opening.starts_with(":  ") && opening.len() > 2048 && opening.ends_with("\nretry: 500"), "{opening:?}");
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(event(&first.next_event().await.unwrap()));
    }
    assert_eq!(seen, [1, 2, 3].map(|seq| (Some(seq), json!({"type": "text", "seq": seq, "data": format!("e-{seq}")}))));
    // The connection breaks after the page handled only event 1: the
    // EventSource reconnects with Last-Event-ID 1 and gets 2 and 3 again.
    drop(first);
    let mut second = socket.stream(&[("stream", "sse"), ("ttl", "300")], &[("last-event-id", "1")]).await;
    second.next_event().await.unwrap();
    assert_eq!(event(&second.next_event().await.unwrap()).0, Some(2));
    assert_eq!(event(&second.next_event().await.unwrap()).0, Some(3));
    socket.send_text("x").await;
    assert_eq!(event(&second.next_event().await.unwrap()), (Some(4), json!({"type": "text", "seq": 4, "data": "x"})));
    // Quiet: heartbeat comments, nothing repeated.
    assert_eq!(second.next_event().await.unwrap(), ": heartbeat");
    // A newer stream takes over; the older one ends.
    let mut third = socket.stream(&[("stream", "sse"), ("ttl", "300")], &[("last-event-id", "4")]).await;
    third.next_event().await.unwrap();
    assert_eq!(second.next_event().await, None, "superseded");
    assert_eq!(third.next_event().await.unwrap(), ": heartbeat", "nothing after 4 is left to repeat");
}

#[actix_web::test]
async fn a_stream_ends_by_itself_and_its_client_reconnects_from_its_last_seq() {
    let stack = stack(vec!["--max-stream-time", "600ms"]).await;
    let socket = stack.open("/echo").await;
    let mut stream = socket.stream(&[("stream", "ndjson"), ("ttl", "200")], &[]).await;
    stream.next_line().await.unwrap();
    socket.send_text("a").await;
    let mut last = 0;
    while let Some(line) = stream.next_line().await {
        if let Some(seq) = line["seq"].as_u64() {
            last = seq;
        }
    }
    assert_eq!(last, 1, "it delivered, then ended after its lifetime");
    socket.send_text("b").await;
    let mut resumed = socket.stream(&[("stream", "ndjson"), ("ack", &last.to_string())], &[]).await;
    resumed.next_line().await.unwrap();
    assert_eq!(resumed.next_line().await, Some(json!({"type": "text", "seq": 2, "data": "b"})));
}

#[actix_web::test]
async fn stream_requests_are_checked() {
    let stack = stack(vec![]).await;
    let socket = stack.open("/echo").await;
    let bad = socket.poll_raw(&[("stream", "websocket")]).await;
    assert_eq!((bad.status, bad.jsonp(CB)["error"].clone()), (400, json!("invalid stream: must be sse or ndjson")));
    let unknown = Socket::new(&json!({"ok": true, "socket": "0".repeat(32), "fqdn": socket.host, "protocol": ""}), {
        stack.daemons[0].http.clone()
    });
    let refused = unknown.poll_raw(&[("stream", "ndjson")]).await;
    assert_eq!(refused.status, 403, "no stream for a socket that does not exist");
}

/// `OPTIONS` with `Origin` and `Access-Control-Request-Method`, as a browser sends.
async fn preflight(stack: &Stack, socket: &Socket, path: &str, origin: &str) -> awc::ClientResponse {
    awc::Client::new()
        .request(awc::http::Method::OPTIONS, format!("http://{}{path}", socket.host))
        .address(([127, 0, 0, 1], stack.daemons[0].port()).into())
        .insert_header(("origin", origin))
        .insert_header(("access-control-request-method", "POST"))
        .insert_header(("access-control-request-headers", "content-type"))
        .send()
        .await
        .expect("OPTIONS")
}

#[actix_web::test]
async fn cors_lets_only_the_page_that_created_the_socket_use_it() {
    let stack = stack(vec![]).await;
    let target = stack.upstream.url("/echo");
    let created = stack
        .create(&[("cb", CB), ("from", "t"), ("target", &target), ("token", "dev")], &[("origin", "https://page.test")])
        .await
        .jsonp(CB);
    let socket = stack.socket_from(&created);
    let send_path = format!("/s/{}", socket.id);

    let allowed = preflight(&stack, &socket, &send_path, "https://page.test").await;
    assert_eq!(allowed.status(), 204);
    let header = |r: &awc::ClientResponse, name: &str| {
        r.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
    };
    assert_eq!(header(&allowed, "access-control-allow-origin"), "https://page.test");
    assert_eq!(header(&allowed, "access-control-allow-methods"), "GET, POST");
    assert!(header(&allowed, "access-control-allow-headers").contains("Content-Type"));
    assert_eq!(header(&allowed, "access-control-allow-credentials"), "", "credentials never");

    let other = preflight(&stack, &socket, &send_path, "https://evil.test").await;
    assert_eq!((other.status().as_u16(), header(&other, "access-control-allow-origin")), (403, String::new()));
    let unknown = preflight(&stack, &socket, &format!("/s/{}", "0".repeat(32)), "https://page.test").await;
    assert_eq!(unknown.status(), 403, "an unknown socket answers like a refused origin");

    // The real requests carry the header for that origin only.
    let poll = format!("/j/{}?ttl=0", socket.id);
    let reply = socket.get_with(&poll, &[("origin", "https://page.test")]).await;
    assert_eq!(reply.header("access-control-allow-origin"), "https://page.test");
    let reply = socket.get_with(&poll, &[("origin", "https://evil.test")]).await;
    assert_eq!(reply.header("access-control-allow-origin"), "");
    let stream = socket.stream(&[("stream", "ndjson")], &[("origin", "https://page.test")]).await;
    assert_eq!(stream.header("access-control-allow-origin"), "https://page.test");
}
