//! What a stranger sends and what a misbehaving upstream does, against a
//! real standalone `polysocketd` process: crossing target patterns, an
//! upstream that stops reading, a swarm of pollers replaying a full queue, a
//! create body that trickles in, refused creates spent against a token's
//! budget, and socket ids in logs.
//!
//! Each test prints the figures it judges by. `scripts/test.sh` runs them
//! one at a time with their output shown (`--test hostile -- --nocapture
//! --test-threads 1`), so no two share the machine's cores.

mod support;

use futures_util::StreamExt;
use polysocket_tests::free_port;
use polysocket_tests::http::query;
use polysocket_tests::process::Process;
use polysocket_tests::upstream::UpstreamServer;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::{CB, Socket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A standalone polysocketd with its own tokens file, logging at the
/// default level (info) to a file the tests read.
struct Bridge {
    process: Process,
    log: PathBuf,
}

impl Bridge {
    async fn start(tokens: Value, extra: &[&str]) -> Bridge {
        let dir = std::env::temp_dir().join(format!("polysocket-hostile-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let tokens_file = dir.join("tokens.json");
        std::fs::write(&tokens_file, json!({ "tokens": tokens }).to_string()).unwrap();
        let log = dir.join("polysocketd.log");
        let tokens_path = tokens_file.to_str().unwrap().to_owned();
        let mut args = vec!["--standalone", "--tokens", &tokens_path, "--allow-private-targets"];
        args.extend_from_slice(&["--create-rate-per-ip", "0"]);
        args.extend_from_slice(extra);
        let process = Process::start_logging_at("polysocketd", free_port(), &args, &log, "info");
        process.http.wait_until_ok("/readyz", Duration::from_secs(20)).await;
        Bridge { process, log }
    }

    async fn create(&self, token: &str, target: &str, origin: Option<&str>) -> Value {
        let params = query(&[("cb", CB), ("from", "hostile"), ("target", target), ("token", token)]);
        let headers: Vec<(&str, &str)> = origin.map(|o| ("origin", o)).into_iter().collect();
        self.process.http.get(None, &format!("/create?{params}"), &headers).await.jsonp(CB)
    }

    async fn open(&self, token: &str, target: &str) -> Socket {
        let created = self.create(token, target, None).await;
        Socket::new(&created, self.process.http.clone())
    }

    /// Checks that no line the daemon logged holds any of these socket ids.
    fn assert_log_holds_none_of(&self, ids: &[&str]) {
        let log = std::fs::read_to_string(&self.log).unwrap();
        assert!(log.lines().count() > 1, "the daemon logged at info: {log}");
        for id in ids {
            assert!(!log.contains(id), "socket id {id} in the log:\n{log}");
        }
    }
}

fn dev_token() -> Value {
    json!({"token": "dev", "targets": ["ws://127.0.0.1:*/*"], "origins": ["*"], "max_connections": 100})
}

/// Sends one message and polls until it comes back: the round trip.
async fn round_trip(socket: &Socket, ack: &mut u64) -> Duration {
    let started = Instant::now();
    socket.send_text("ping").await;
    loop {
        let reply = socket.poll_raw(&[("ack", &ack.to_string()), ("ttl", "5000")]).await;
        let body = reply.jsonp(CB);
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        let echoed = messages.iter().filter(|m| m["type"] == "text").count();
        if let Some(seq) = messages.iter().filter_map(|m| m["seq"].as_u64()).max() {
            *ack = seq;
        }
        if echoed > 0 {
            return started.elapsed();
        }
    }
}

/// Round trips on `socket`, one every `every`, until `stop` is set.
fn probe(socket: Socket, every: Duration, stop: Arc<AtomicBool>) -> actix_web::rt::task::JoinHandle<Vec<Duration>> {
    actix_web::rt::spawn(async move {
        let mut ack = 0;
        let mut times = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            times.push(round_trip(&socket, &mut ack).await);
            actix_web::rt::time::sleep(every).await;
        }
        times
    })
}

fn percentile(times: &mut [Duration], p: f64) -> Duration {
    times.sort();
    times[((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1]
}

#[actix_web::test]
async fn hostile_targets_built_to_cross_a_wildcard_never_reach_anyone() {
    // The loopback port the crossing targets name: nothing may connect to it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let wild = json!({"token": "wild", "origins": ["*"], "max_connections": 10,
                      "targets": [{"pattern": "ws://*.example.com/*", "upstream_headers": {"X-Api-Key": "k"}}]});
    let bridge = Bridge::start(json!([wild]), &[]).await;
    let attempts = [
        format!("ws://127.0.0.1:{port}/echo/.example.com:80/"),
        format!("ws://127.0.0.1:{port}/echo?.example.com:80/x"),
        format!("ws://127.0.0.1:{port}/echo?x=.example.com:80/"),
        format!("ws://127.0.0.1:{port}/.example.com:80/echo"),
        format!("ws://127.0.0.1:{port}/echo%2F.example.com"),
        format!("ws://example.com.127.0.0.1.nip.io:{port}/"),
        format!("ws://127.0.0.1:{port}#.example.com/"),
        format!("ws://x@127.0.0.1:{port}/.example.com/"),
        "ws://example.com/".to_owned(),
    ];
    for target in &attempts {
        let created = bridge.create("wild", target, None).await;
        assert_eq!(created["ok"], false, "{target}: {created}");
        let error = created["error"].as_str().unwrap();
        assert!(error == "target not allowed" || error.starts_with("invalid target"), "{target}: {error}");
    }
    let contacted = std::iter::from_fn(|| listener.accept().ok()).count();
    println!("crossing targets: {} tried, {} created, {contacted} upstream connections", attempts.len(), 0);
    assert_eq!(contacted, 0, "a refused target was contacted");
}

#[actix_web::test]
async fn hostile_a_wedged_upstream_frees_its_slot_and_spares_the_other_sockets() {
    let upstream = UpstreamServer::start();
    let one = json!({"token": "one", "targets": ["ws://127.0.0.1:*/*"], "origins": ["*"], "max_connections": 1});
    let (ping, idle, send) = (Duration::from_secs(2), Duration::from_secs(10), Duration::from_secs(3));
    let args = ["--ping-interval", "2s", "--idle-timeout", "10s", "--send-timeout", "3s"];
    let bridge = Bridge::start(json!([one, dev_token()]), &args).await;
    let wedged = bridge.open("one", &upstream.url("/stall")).await;
    let other = bridge.open("dev", &upstream.url("/echo")).await;

    // Fill the stalled upstream's TCP window until sends time out.
    let chunk = vec![b'x'; 512 * 1024];
    let mut sent = 0;
    let wedged_at = loop {
        let reply = wedged.post("?cb=cb", "application/octet-stream", &chunk).await;
        if reply.status == 504 {
            break Instant::now();
        }
        assert_eq!(reply.status, 201, "{reply:?}");
        sent += chunk.len();
        assert!(sent < 256 << 20, "the stalled upstream took {sent} bytes");
    };

    let stop = Arc::new(AtomicBool::new(false));
    let other_ids = other.id.clone();
    let prober = probe(other, Duration::from_millis(50), stop.clone());
    // The wedged socket's client hears of it; its slot comes free.
    let close = loop {
        let body = wedged.poll_raw(&[("ttl", "20000")]).await.jsonp(CB);
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        if let Some(close) = messages.iter().find(|m| m["type"] == "close") {
            break close.clone();
        }
    };
    let closed_after = wedged_at.elapsed();
    let slot_after = loop {
        let created = bridge.create("one", &upstream.url("/echo"), None).await;
        if created["ok"] == true {
            break wedged_at.elapsed();
        }
        assert_eq!(created["error"], "connection limit reached", "{created}");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    };
    stop.store(true, Ordering::Relaxed);
    let mut times = prober.await.unwrap();
    let worst = *times.iter().max().unwrap();
    let p50 = percentile(&mut times, 0.5);
    println!(
        "wedged upstream: {} KiB taken before the first 504; client told {close} after {closed_after:?}; \
         slot free after {slot_after:?} (bound {:?}); other socket: {} round trips, p50 {p50:?}, worst {worst:?}",
        sent / 1024,
        ping + idle + send,
        times.len(),
    );
    assert_eq!(close["code"], 1006, "{close}");
    assert!(slot_after <= ping + idle + send, "slot freed after {slot_after:?}");
    assert!(worst < Duration::from_millis(100), "another socket's worst round trip: {worst:?}");
    bridge.assert_log_holds_none_of(&[&wedged.id, &other_ids]);
}

#[actix_web::test]
async fn hostile_a_drain_with_a_wedged_socket_ends_within_its_grace() {
    let upstream = UpstreamServer::start();
    let grace = Duration::from_secs(3);
    let bridge = Bridge::start(json!([dev_token()]), &["--send-timeout", "3s", "--shutdown-grace", "3s"]).await;
    let wedged = bridge.open("dev", &upstream.url("/stall")).await;
    let chunk = vec![b'x'; 512 * 1024];
    while wedged.post("?cb=cb", "application/octet-stream", &chunk).await.status != 504 {}
    let mut process = bridge.process;
    let started = Instant::now();
    process.terminate();
    let exit = process.wait_exit(grace + Duration::from_secs(10));
    let took = started.elapsed();
    println!("drain with a wedged socket: exited {exit:?} after {took:?} (grace {grace:?})");
    assert!(exit.is_some_and(|status| status.success()), "{exit:?}");
    assert!(took <= grace + Duration::from_secs(2), "the drain took {took:?}");
}

/// Polls `/j/<socket>?ack=0` over and over on one connection, as fast as
/// answers come, gzip accepted, reading answers without decoding them.
async fn replay_polls(port: u16, host: String, socket: String, stop: Arc<AtomicBool>) -> (u64, u64) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request =
        format!("GET /j/{socket}?cb={CB}&ack=0&ttl=0 HTTP/1.1\r\nHost: {host}\r\nAccept-Encoding: gzip\r\n\r\n");
    let (mut polls, mut bytes) = (0, 0);
    let mut buffer = vec![0u8; 1 << 16];
    while !stop.load(Ordering::Relaxed) {
        stream.write_all(request.as_bytes()).await.unwrap();
        // Head, then exactly Content-Length bytes of body.
        let mut head = Vec::new();
        let body_start = loop {
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(n > 0, "the daemon closed the connection");
            head.extend_from_slice(&buffer[..n]);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
        };
        let text = String::from_utf8_lossy(&head[..body_start]).to_ascii_lowercase();
        let length: usize = text
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse().ok())
            .expect("a Content-Length");
        let mut left = length - (head.len() - body_start);
        while left > 0 {
            let n = stream.read(&mut buffer[..left.min(1 << 16)]).await.unwrap();
            assert!(n > 0, "the daemon closed the connection mid-answer");
            left -= n;
        }
        polls += 1;
        bytes += length as u64;
    }
    (polls, bytes)
}

#[actix_web::test]
async fn hostile_a_poller_swarm_replaying_a_full_queue_does_not_slow_other_sockets() {
    let upstream = UpstreamServer::start();
    let bridge = Bridge::start(json!([dev_token()]), &[]).await;
    // ~3.6 MB waiting for a client that never acknowledges any of it.
    let text = "q".repeat(1500);
    let hoard = bridge.open("dev", &upstream.url(&format!("/say?n=2400&text={text}"))).await;
    let other = bridge.open("dev", &upstream.url("/echo")).await;
    actix_web::rt::time::sleep(Duration::from_secs(1)).await;

    let quiet_stop = Arc::new(AtomicBool::new(false));
    let quiet = probe(other, Duration::from_millis(20), quiet_stop.clone());
    actix_web::rt::time::sleep(Duration::from_secs(3)).await;
    quiet_stop.store(true, Ordering::Relaxed);
    let mut quiet_times = quiet.await.unwrap();
    let rss_before = bridge.process.rss_kib();

    let other = bridge.open("dev", &upstream.url("/echo")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let swarm: Vec<_> = (0..16)
        .map(|_| {
            let (host, id) = (hoard.host.clone(), hoard.id.clone());
            actix_web::rt::spawn(replay_polls(bridge.process.port, host, id, stop.clone()))
        })
        .collect();
    let probe_stop = Arc::new(AtomicBool::new(false));
    let prober = probe(other, Duration::from_millis(20), probe_stop.clone());
    let mut rss_peak = rss_before;
    for _ in 0..40 {
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
        rss_peak = rss_peak.max(bridge.process.rss_kib());
    }
    probe_stop.store(true, Ordering::Relaxed);
    let mut times = prober.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let (mut polls, mut bytes) = (0, 0);
    for poller in swarm {
        let (p, b) = poller.await.unwrap();
        polls += p;
        bytes += b;
    }
    let (quiet_p90, p90) = (percentile(&mut quiet_times, 0.9), percentile(&mut times, 0.9));
    println!(
        "poller swarm: 16 connections, {polls} polls of the full queue in 10 s ({} KiB each on the wire); \
         other socket p90 {p90:?} (alone: {quiet_p90:?}, {:.1}x), {} round trips; RSS {rss_before} KiB before, \
         peak {rss_peak} KiB",
        bytes / polls.max(1) / 1024,
        p90.as_secs_f64() / quiet_p90.as_secs_f64(),
        times.len(),
    );
    assert!(polls > 0, "the swarm got no answers");
    assert!(p90 <= Duration::from_millis(250), "another socket's p90 round trip: {p90:?}");
    assert!(rss_peak <= rss_before + 64 * 1024, "RSS grew from {rss_before} KiB to {rss_peak} KiB");
    bridge.assert_log_holds_none_of(&[&hoard.id]);
}

#[actix_web::test]
async fn hostile_a_trickled_create_body_is_cut_off() {
    let bridge = Bridge::start(json!([dev_token()]), &["--create-body-timeout", "3s"]).await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", bridge.process.port)).await.unwrap();
    let head = "POST /create HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                Content-Length: 1000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    // One byte every 200 ms, until the daemon answers or hangs up.
    let cut_after = loop {
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break started.elapsed(),
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buffer[..n]);
                break started.elapsed();
            }
            Err(_) => {
                assert!(started.elapsed() < Duration::from_secs(30), "still holding the request");
                if stream.write_all(b"a").await.is_err() {
                    break started.elapsed();
                }
            }
        }
    };
    let status = String::from_utf8_lossy(&answer).lines().next().unwrap_or("").to_owned();
    println!("trickled create: cut after {cut_after:?} ({status:?}), body timeout 3s");
    assert!(status.starts_with("HTTP/1.1 408"), "{status:?}");
    assert!(cut_after <= Duration::from_secs(4), "cut after {cut_after:?}");
}

#[actix_web::test]
async fn hostile_refused_creates_do_not_spend_the_tokens_budget() {
    let upstream = UpstreamServer::start();
    let app = json!({"token": "app", "targets": ["ws://127.0.0.1:*/*"], "origins": ["https://app.test"],
                     "max_connections": 10});
    let bridge = Bridge::start(json!([app]), &["--create-rate-per-token", "20"]).await;
    let target = upstream.url("/echo");
    let refused: Vec<Value> = futures_util::stream::iter(0..1500)
        .map(|_| bridge.create("app", &target, Some("https://evil.test")))
        .buffer_unordered(16)
        .collect()
        .await;
    let other = refused.iter().find(|r| r["error"] != "origin not allowed");
    assert!(other.is_none(), "{other:?}");
    let created = bridge.create("app", &target, Some("https://app.test")).await;
    println!("strangers: {} creates from a wrong origin refused; the page's own create: {created}", refused.len());
    assert_eq!(created["ok"], true, "{created}");
}
