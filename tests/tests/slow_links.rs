//! What clients on slow links rely on, against real daemons: several
//! messages in one `/s` request (each with its own `seq`, so a retried or
//! half-failed batch is neither doubled nor lost) and gzipped `/j` answers
//! and streams.

mod support;

use serde_json::{Value, json};
use support::{Backend, CB, Options, Stack};

async fn stack(daemon_args: Vec<&'static str>) -> Stack {
    let mut args = vec!["--allow-private-targets"];
    args.extend(daemon_args);
    Stack::start(Backend::Memory, Options { daemons: 1, daemon_args: args, ..Options::default() }).await
}

fn texts(messages: &[Value]) -> Vec<&str> {
    messages.iter().map(|m| m["data"].as_str().unwrap()).collect()
}

#[actix_web::test]
async fn a_batch_retried_after_a_lost_answer_is_delivered_once() {
    let stack = stack(vec![]).await;
    let socket = stack.open("/echo").await;
    // Text, binary, text: one t for each d.
    let batch = [("t", "t"), ("d", "a"), ("t", "b"), ("d", "Yg=="), ("t", "t"), ("d", "c"), ("seq", "1")];
    let sent = socket.send_get(&batch).await;
    assert_eq!((sent.status, sent.jsonp(CB)), (201, json!({"ok": true})), "{sent:?}");
    // The client never saw that answer, so it sends the same request again,
    // then a POST that overlaps it by one message.
    let again = socket.send_get(&batch).await;
    assert_eq!(again.status, 201, "{again:?}");
    let form = b"seq=3&d=c&d=d%20e&d=f";
    let posted = socket.post("", "application/x-www-form-urlencoded", form).await;
    assert_eq!((posted.status, posted.json()), (201, json!({"ok": true})), "{posted:?}");

    let received = socket.receive(5).await;
    assert_eq!(received[1], json!({"type": "binary", "seq": 2, "data": "Yg=="}));
    let in_order: Vec<_> = received.iter().map(|m| (m["seq"].as_u64().unwrap(), m["data"].as_str().unwrap())).collect();
    assert_eq!(in_order, [(1, "a"), (2, "Yg=="), (3, "c"), (4, "d e"), (5, "f")], "each once, in order");
}

#[actix_web::test]
async fn a_malformed_batch_delivers_nothing() {
    let stack = stack(vec![]).await;
    let socket = stack.open("/echo").await;
    for (params, error) in [
        (vec![("t", "t"), ("t", "b"), ("d", "a"), ("d", "!!")], "invalid d: not standard base64"),
        (vec![("t", "t"), ("t", "b"), ("d", "a")], "invalid t: give one t for every d, or one for all of them"),
        (vec![("t", "t"), ("t", "c"), ("d", "a"), ("d", "b")], "invalid t: c (close) takes no d and comes alone"),
        (vec![("t", "c"), ("d", "a")], "invalid t: c (close) takes no d and comes alone"),
    ] {
        let refused = socket.send_get(&params).await;
        assert_eq!((refused.status, refused.jsonp(CB)["error"].clone()), (400, json!(error)));
    }
    socket.send_text("only this").await;
    assert_eq!(texts(&socket.receive(1).await), ["only this"]);
}

#[actix_web::test]
async fn a_batch_over_the_body_limit_says_so_though_each_message_fits() {
    // Bodies hold one largest message (base64 and form encoding included): 5,428 bytes here.
    let stack = stack(vec!["--max-message-bytes", "1000"]).await;
    let socket = stack.open("/echo").await;
    let form = vec!["d=".to_owned() + &"x".repeat(900); 10].join("&");
    let refused = socket.post("", "application/x-www-form-urlencoded", form.as_bytes()).await;
    let error = "request body too big: at most 5428 bytes (send fewer messages at a time)";
    assert_eq!((refused.status, refused.json()["error"].clone()), (413, json!(error)));
    let half = vec!["d=".to_owned() + &"x".repeat(900); 5].join("&");
    assert_eq!(socket.post("", "application/x-www-form-urlencoded", half.as_bytes()).await.status, 201);
    assert_eq!(socket.receive(5).await.len(), 5);
}

#[actix_web::test]
async fn a_batch_cut_by_an_upstream_that_stops_reading_answers_what_was_accepted() {
    let stack = stack(vec!["--send-timeout", "1s"]).await;
    let socket = stack.open("/stall").await;
    // 60 KB messages, 20 a request: the upstream's TCP window and the
    // kernel's buffers take a few megabytes, then writes stop.
    let message = "x".repeat(60_000);
    let body = |seq: u64| {
        let mut form = format!("seq={seq}");
        for _ in 0..20 {
            form.push_str("&d=");
            form.push_str(&message);
        }
        form.into_bytes()
    };
    let mut seq = 1;
    let (cut, accepted) = loop {
        assert!(seq < 2000, "the stalled upstream took 100 MB");
        let answer = socket.post("", "application/x-www-form-urlencoded", &body(seq)).await;
        if answer.status == 201 {
            seq += 20;
            continue;
        }
        let failure = answer.json();
        assert_eq!(
            (answer.status, failure["error"].clone()),
            (504, json!("upstream did not take the message in time"))
        );
        let accepted = failure["accepted"].as_u64().unwrap_or_else(|| panic!("no accepted in {failure}"));
        if accepted == 20 {
            // All taken into the connection's buffer, whose last write timed
            // out: they go once the upstream reads; the next batch is cut.
            seq += 20;
            continue;
        }
        break (answer, accepted);
    };
    assert_eq!(cut.status, 504, "{cut:?}");
    assert_eq!(cut.json()["error"], "upstream did not take the message in time");
    assert!(accepted < 20, "cut partway: {accepted}");
    // Retried whole, what was taken is taken again, not repeated: at least as
    // many are counted accepted, and nothing of it is out of order.
    let retried = socket.post("", "application/x-www-form-urlencoded", &body(seq)).await;
    assert_eq!(retried.status, 504, "{retried:?}");
    assert!(retried.json()["accepted"].as_u64().unwrap() >= accepted);
}

#[actix_web::test]
async fn a_gzipped_stream_delivers_each_message_as_it_comes() {
    let stack = stack(vec![]).await;
    let socket = stack.open("/echo").await;
    // No heartbeat for a minute: nothing but its own flush can bring a message.
    let params = [("stream", "ndjson"), ("ttl", "60000")];
    let mut stream = socket.stream(&params, &[("Accept-Encoding", "gzip")]).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("content-encoding"), "gzip");
    assert_eq!(stream.next_line().await, Some(json!({"type": "heartbeat"})));
    for (seq, text) in [(1, "one"), (2, "two"), (3, &"a longer message ".repeat(100)[..])] {
        socket.send_text(text).await;
        assert_eq!(stream.next_line().await, Some(json!({"type": "text", "seq": seq, "data": text})));
    }
    // Server-Sent Events open with 2 KiB of padding that must be 2 KiB on
    // the wire, to get through proxies that hold back a response's start.
    let mut sse = socket.stream(&[("stream", "sse"), ("ack", "3")], &[("Accept-Encoding", "gzip")]).await;
    assert_eq!(sse.header("content-encoding"), "gzip");
    assert!(sse.next_event().await.unwrap().starts_with(":  "));
    assert!(sse.wire_bytes > 2048, "{} bytes", sse.wire_bytes);
    // A client that does not take gzip gets the stream as it is.
    let plain = socket.stream(&[("stream", "ndjson"), ("ack", "3")], &[]).await;
    assert_eq!(plain.header("content-encoding"), "");
}

#[actix_web::test]
async fn polls_are_gzipped_when_long_enough_to_gain() {
    let stack = stack(vec![]).await;
    let socket = stack.open("/say?n=20&text=a%20message%20much%20like%20the%20others").await;
    let gzip = [("Accept-Encoding", "gzip, deflate")];
    let poll = |ack: &'static str| {
        let socket = &socket;
        async move { socket.get_with(&format!("/j/{}?cb={CB}&ttl=2000&ack={ack}", socket.id), &gzip).await }
    };
    let long = poll("0").await;
    assert_eq!(long.header("content-encoding"), "gzip");
    assert_eq!(long.jsonp(CB)["messages"].as_array().unwrap().len(), 20);
    assert!(long.wire_bytes * 3 < long.body.len(), "{} bytes for {}", long.wire_bytes, long.body.len());
    socket.send_text("short").await;
    let short = poll("20").await;
    assert_eq!(short.header("content-encoding"), "", "under 1 KiB it is not worth it");
    assert_eq!(texts(&short.jsonp(CB)["messages"].as_array().unwrap()[..]), ["short"]);
}

#[actix_web::test]
async fn a_daemon_run_with_no_gzip_compresses_nothing() {
    let stack = stack(vec!["--no-gzip"]).await;
    let socket = stack.open("/say?n=20&text=a%20message%20much%20like%20the%20others").await;
    let gzip = [("Accept-Encoding", "gzip")];
    let poll = socket.get_with(&format!("/j/{}?cb={CB}&ttl=2000&ack=0", socket.id), &gzip).await;
    assert_eq!(poll.jsonp(CB)["messages"].as_array().unwrap().len(), 20);
    assert_eq!(poll.header("content-encoding"), "");
    let stream = socket.stream(&[("stream", "ndjson"), ("ack", "0")], &gzip).await;
    assert_eq!(stream.header("content-encoding"), "");
}
