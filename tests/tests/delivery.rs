//! WebSocket semantics and lossless delivery through the bridge: closing
//! handshakes, idempotent sends, long messages over GET, backpressure,
//! keepalive, idle sockets and failed upstream connections.

mod support;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use polysocket_tests::eventually;
use polysocket_tests::http::Http;
use serde_json::{Value, json};
use std::time::Duration;
use support::{Backend, CB, Options, Socket, Stack};

fn options(daemon_args: &[&'static str]) -> Options {
    let mut args = vec!["--allow-private-targets"];
    args.extend_from_slice(daemon_args);
    Options { daemons: 1, daemon_args: args, ..Options::default() }
}

/// Polls until the close message arrives and returns it.
async fn close_of(socket: &Socket) -> Value {
    for _ in 0..100 {
        let body = socket.poll_raw(&[("ttl", "1000")]).await.jsonp(CB);
        if let Some(close) = body["messages"].as_array().unwrap().iter().find(|m| m["type"] == "close") {
            return close.clone();
        }
    }
    panic!("no close message arrived");
}

#[actix_web::test]
async fn client_close_runs_the_closing_handshake() {
    let stack = Stack::start(Backend::Memory, options(&[])).await;
    let socket = stack.open("/echo").await;
    let bad = socket.send_get(&[("t", "c"), ("code", "1005")]).await;
    assert_eq!((bad.status, bad.jsonp(CB)["error"].clone()), (400, json!("invalid code: must be 1000 or 3000-4999")));

    let reply = socket.send_get(&[("t", "c"), ("code", "4001"), ("reason", "done here")]).await;
    assert_eq!(reply.status, 201);
    // The echo server answers our Close with the same code and reason.
    assert_eq!(close_of(&socket).await, json!({"type": "close", "seq": 1, "code": 4001, "reason": "done here"}));
    assert_eq!(socket.poll_raw(&[("ttl", "100")]).await.status, 403);
}

#[actix_web::test]
async fn retried_sends_are_accepted_once_and_gaps_are_refused() {
    let stack = Stack::start(Backend::Memory, options(&[])).await;
    let socket = stack.open("/echo").await;
    let send = |seq: &'static str, data: &'static str| {
        let socket = &socket;
        async move { socket.send_get(&[("seq", seq), ("d", data)]).await }
    };
    assert_eq!(send("1", "a").await.status, 201);
    assert_eq!(send("1", "a").await.status, 201, "a retry is accepted again");
    let gap = send("3", "c").await;
    assert_eq!(gap.status, 409);
    assert_eq!(gap.jsonp(CB), json!({"ok": false, "error": "out of order: expected seq 2", "expected": 2}));
    assert_eq!(send("2", "b").await.status, 201);

    let received: Vec<Value> = socket.receive(2).await.iter().map(|m| m["data"].clone()).collect();
    assert_eq!(received, ["a", "b"]);
    let nothing_more = socket.poll_raw(&[("ttl", "300")]).await.jsonp(CB);
    assert_eq!(nothing_more["messages"], json!([{"type": "heartbeat"}]), "the retried send was not forwarded twice");
}

#[actix_web::test]
async fn a_long_message_sent_in_fragments_arrives_whole() {
    let stack = Stack::start(Backend::Memory, options(&[])).await;
    let socket = stack.open("/echo").await;
    // 200 KB in pieces that fit in a legacy browser's ~2 KB URL.
    let message: String = (0..200_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let pieces: Vec<&str> = message.as_bytes().chunks(1500).map(|c| std::str::from_utf8(c).unwrap()).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let more = if i + 1 < pieces.len() { "1" } else { "0" };
        let seq = (i + 1).to_string();
        let reply = socket.send_get(&[("d", piece), ("more", more), ("seq", &seq)]).await;
        assert_eq!(reply.status, 201, "piece {i}");
    }
    let received = socket.receive(1).await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["data"].as_str().unwrap().len(), 200_000);
    assert_eq!(received[0]["data"], message);

    // A piece of another type is refused; the message so far stays.
    assert_eq!(socket.send_get(&[("d", "kept-"), ("more", "1")]).await.status, 201);
    assert_eq!(socket.send_get(&[("t", "b"), ("d", "AAE="), ("more", "1")]).await.status, 400);
    assert_eq!(socket.send_get(&[("d", "whole")]).await.status, 201);
    assert_eq!(socket.receive(1).await[0]["data"], "kept-whole");

    // Over --max-message-bytes: 413 and nothing of it reaches the upstream.
    let big = vec![1u8; 600 * 1024];
    assert_eq!(socket.post("?more=1", "application/octet-stream", &big).await.status, 201);
    let over = socket.post("", "application/octet-stream", &big).await;
    assert_eq!((over.status, over.json()["error"].clone()), (413, json!("message too big")));
    socket.send_text("after").await;
    let after = socket.receive(1).await;
    assert_eq!(after, [json!({"type": "text", "seq": 3, "data": "after"})]);
}

#[actix_web::test]
async fn a_burst_is_delivered_in_order_with_a_bounded_queue() {
    const QUEUE: usize = 16 * 1024;
    let stack = Stack::start(Backend::Memory, options(&["--max-queue-bytes", "16384"])).await;
    let socket = stack.open("/say?n=10000&text=m").await;
    let mut next = 1u64;
    while next <= 10_000 {
        let body = socket.poll_raw(&[("ttl", "2000")]).await.jsonp(CB);
        let messages = body["messages"].as_array().unwrap();
        let bytes: usize = messages.iter().filter_map(|m| m["data"].as_str()).map(str::len).sum();
        // One message may cross the limit: reading pauses after it.
        assert!(bytes <= QUEUE + 16, "a poll answer held {bytes} bytes, over the queue bound");
        for message in messages.iter().filter(|m| m["type"] == "text") {
            assert_eq!(message["seq"], next);
            assert_eq!(message["data"], format!("m-{next}"));
            next += 1;
        }
    }
}

#[actix_web::test]
async fn pings_keep_a_socket_alive() {
    let stack = Stack::start(Backend::Memory, options(&["--ping-interval", "200ms"])).await;
    let socket = stack.open("/pings").await;
    // Several ping intervals pass while the client polls.
    for _ in 0..4 {
        let body = socket.poll_raw(&[("ttl", "300")]).await.jsonp(CB);
        assert_eq!(body["messages"], json!([{"type": "heartbeat"}]));
    }
    socket.send_text("how many pings?").await;
    let pings: u32 = socket.receive(1).await[0]["data"].as_str().unwrap().parse().unwrap();
    assert!(pings >= 3, "the upstream saw {pings} pings in 1.2 s at a 200 ms interval");
}

#[actix_web::test]
async fn an_upstream_that_stops_answering_pings_is_reported() {
    let stack = Stack::start(Backend::Memory, options(&["--ping-interval", "200ms"])).await;
    let socket = stack.open("/deaf").await;
    let close = close_of(&socket).await;
    assert_eq!(
        (close["code"].clone(), close["reason"].clone()),
        (json!(1006), json!("upstream stopped answering pings"))
    );
}

#[actix_web::test]
async fn idle_sockets_are_closed_and_free_their_slot() {
    let stack = Stack::start(Backend::Memory, options(&["--idle-timeout", "300ms"])).await;
    let target = stack.upstream.url("/echo");
    let params = [("cb", CB), ("from", "t"), ("target", target.as_str()), ("token", "strict")];
    let origin = [("origin", "https://app.test")];
    let socket = stack.socket_from(&stack.create(&params, &origin).await.jsonp(CB));
    // Nobody polls: once idle, the strict token's only slot is free again.
    // (Polling here would keep the socket in use; the idle timing itself is
    // tested on a paused clock in polysocketd's socket owner.)
    eventually("the idle socket's slot to come back", Duration::from_secs(10), || async {
        stack.create(&params, &origin).await.jsonp(CB)["ok"].as_bool().filter(|ok| *ok)
    })
    .await;
    assert_eq!(socket.poll_raw(&[("ttl", "100")]).await.status, 403, "the idle socket is gone");
}

#[actix_web::test]
async fn upstream_protocol_violations_fail_the_connection() {
    let stack = Stack::start(Backend::Memory, options(&["--max-message-bytes", "65536"])).await;
    let invalid = stack.open("/invalid-utf8").await;
    let close = close_of(&invalid).await;
    assert_eq!((close["code"].clone(), close["reason"].clone()), (json!(1007), json!("invalid UTF-8 in text message")));

    let huge = stack.open("/huge?bytes=100000").await;
    let close = close_of(&huge).await;
    assert_eq!((close["code"].clone(), close["reason"].clone()), (json!(1009), json!("message too big")));

    // A message at the limit still passes.
    let fits = stack.open("/huge?bytes=65536").await;
    let received = fits.receive(1).await;
    assert_eq!(BASE64.decode(received[0]["data"].as_str().unwrap()).unwrap().len(), 65536);
}

#[actix_web::test]
async fn one_handshake_at_a_time_per_client_and_upstream_address() {
    let stack = Stack::start(Backend::Memory, options(&[])).await;
    let opens = (0..3).map(|_| stack.open("/slow?ms=150"));
    let sockets = futures_util::future::join_all(opens).await;
    assert_eq!(sockets.len(), 3);
    let stats = Http::new(stack.upstream.port()).get(None, "/slow-stats", &[]).await;
    assert_eq!(serde_json::from_str::<Value>(&stats.body).unwrap(), json!({"max_in_progress": 1}));
}

#[actix_web::test]
async fn guessing_socket_ids_is_slowed_down_without_refusing_real_sockets() {
    let stack = Stack::start(Backend::Memory, options(&["--unknown-socket-rate", "1"])).await;
    let socket = stack.open("/echo").await;
    let guess = |n: usize| format!("/j/{:032x}?ttl=0", n);
    let mut statuses = Vec::new();
    for n in 0..15 {
        statuses.push(socket.http_get(&guess(n)).await.status);
    }
    assert_eq!(statuses[..10], [403; 10], "a burst of ten honest mistakes");
    assert!(statuses[10..].contains(&429), "then guesses are refused: {statuses:?}");
    let refused = socket.http_get(&guess(99)).await;
    assert_eq!(refused.status, 429);
    assert!(refused.header("retry-after").parse::<u64>().is_ok_and(|s| s >= 1));
    // Other users behind the same address (a NAT) keep using their sockets.
    assert_eq!(socket.http_get(&format!("/j/{}?ttl=0", socket.id)).await.status, 200);
    assert_eq!(socket.send_get(&[("d", "still here")]).await.status, 201);
}

#[actix_web::test]
async fn sends_per_socket_are_rate_limited() {
    let stack = Stack::start(Backend::Memory, options(&["--max-sends-per-second", "2"])).await;
    let socket = stack.open("/echo").await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        statuses.push(socket.send_get(&[("d", &i.to_string())]).await.status);
    }
    assert_eq!(statuses[..4], [201; 4], "a burst of twice the rate");
    assert!(statuses.contains(&429), "{statuses:?}");
}

/// A client that lost the answer to an accepted send retries it; the retry
/// is answered as accepted even when the rate is used up, or the client
/// would believe the message lost.
#[actix_web::test]
async fn a_retried_send_is_not_rate_limited() {
    let stack = Stack::start(Backend::Memory, options(&["--max-sends-per-second", "1"])).await;
    let socket = stack.open("/echo").await;
    let statuses: Vec<u16> = futures_util::future::join_all(
        (0..4).map(|_| async { socket.send_get(&[("d", "once"), ("seq", "1")]).await.status }),
    )
    .await;
    assert_eq!(statuses, [201; 4]);
    let fresh = socket.send_get(&[("d", "next"), ("seq", "2")]).await.status;
    let more = socket.send_get(&[("d", "later"), ("seq", "3")]).await.status;
    assert!([fresh, more].contains(&429), "new sends are still limited: {fresh} {more}");
}

#[actix_web::test]
async fn polls_per_address_are_bounded() {
    let stack = Stack::start(Backend::Memory, options(&["--max-polls-per-ip", "2"])).await;
    let sockets = [stack.open("/echo").await, stack.open("/echo").await, stack.open("/echo").await];
    let sockets = std::rc::Rc::new(sockets);
    let waiting: Vec<_> = (0..2)
        .map(|i| {
            let sockets = sockets.clone();
            actix_web::rt::spawn(async move { sockets[i].poll_raw(&[("ttl", "3000")]).await.status })
        })
        .collect();
    stack.daemons[0].http.wait_for_metric("polysocket_polls_waiting 2").await;
    let third = sockets[2].poll_raw(&[("ttl", "100")]).await;
    assert_eq!((third.status, third.jsonp(CB)["error"].clone()), (429, json!("too many polls from this address")));
    for poll in waiting {
        assert_eq!(poll.await.unwrap(), 200);
    }
    assert_eq!(sockets[2].poll_raw(&[("ttl", "100")]).await.status, 200, "slots are given back");
}

#[actix_web::test]
async fn slow_clients_cannot_hold_the_daemon() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::start(Backend::Memory, options(&["--header-timeout", "1s"])).await;
    let port = stack.daemons[0].port();
    // Many clients connect and send half a request head, then nothing (slowloris).
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.write_all(b"GET /j/0123 HTTP/1.1\r\nHost: s1.localhost\r\nX-Slow: ").await.unwrap();
        slow.push(stream);
    }
    // Meanwhile everyone else is served.
    let socket = stack.open("/echo").await;
    socket.send_text("served anyway").await;
    assert_eq!(socket.receive(1).await[0]["data"], "served anyway");
    // And the slow ones are cut off: 408, then the connection is closed.
    for stream in &mut slow {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
        assert!(read.is_ok_and(|r| r.is_ok()), "a half-open connection was left open");
        assert!(answer.is_empty() || answer.starts_with(b"HTTP/1.1 408"), "{}", String::from_utf8_lossy(&answer));
    }
}

#[actix_web::test]
async fn a_body_that_trickles_in_gets_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::start(Backend::Memory, options(&["--body-timeout", "500ms"])).await;
    let socket = stack.open("/echo").await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", stack.daemons[0].port())).await.unwrap();
    let head = format!(
        "POST /s/{} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\nonly a few bytes",
        socket.id, socket.host
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut answer)).await.unwrap().unwrap();
    assert_eq!(&answer, b"HTTP/1.1 408");
    // Nothing of it reached the upstream.
    assert_eq!(socket.poll_raw(&[("ttl", "300")]).await.jsonp(CB)["messages"], json!([{"type": "heartbeat"}]));
}
