//! The real `polysocketd` binary in standalone mode: one process, no Redis,
//! configured only by flags and environment variables, as the README runs it.

use polysocket_tests::http::{Http, query};
use polysocket_tests::upstream::UpstreamServer;
use serde_json::json;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Kills the daemon when the test ends, whatever happens.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn daemon() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_polysocketd"));
    command.env_remove("RUST_LOG").stdout(Stdio::null()).stderr(Stdio::piped());
    command
}

fn tokens_file(name: &str, contents: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("polysocket-{}-{name}.json", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
}

#[actix_web::test]
async fn standalone_binary_bridges_from_env_configuration() {
    let upstream = UpstreamServer::start();
    let port = polysocket_tests::free_port();
    let tokens = tokens_file(
        "ok",
        r#"{"tokens":[{"token":"dev","targets":["ws://127.0.0.1:*/*"],"origins":["*"],"max_connections":5}]}"#,
    );
    let _daemon = Running(
        daemon()
            .arg("--standalone")
            .env("POLYSOCKET_LISTEN", format!("127.0.0.1:{port}"))
            .env("POLYSOCKET_TOKENS", &tokens)
            .env("POLYSOCKET_ALLOW_PRIVATE_TARGETS", "true")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = Http::new(port);
    http.wait_until_ok("/readyz", Duration::from_secs(20)).await;

    let target = upstream.url("/echo");
    let params = query(&[("from", "curl"), ("target", &target), ("token", "dev")]);
    let created = http.get(None, &format!("/create?{params}"), &[]).await.json();
    assert_eq!(created["ok"], true, "{created}");
    let host = created["fqdn"].as_str().unwrap();
    assert!(host.ends_with(&format!(".localhost:{port}")), "standalone fqdn defaults to localhost:<port>: {host}");
    let socket = created["socket"].as_str().unwrap();

    let sent = http.post(Some(host), &format!("/s/{socket}"), "text/plain", b"over the binary".to_vec()).await;
    assert_eq!(sent.status, 201);
    let received = http.get(Some(host), &format!("/j/{socket}?ttl=5000"), &[]).await.json();
    assert_eq!(received, json!({"ok": true, "messages": [{"type": "text", "seq": 1, "data": "over the binary"}]}));
}

fn run_to_exit(command: &mut Command) -> Output {
    command.stdout(Stdio::piped()).output().unwrap()
}

#[test]
fn bad_configuration_exits_64_with_a_reason() {
    let missing_fqdn = run_to_exit(daemon().env_remove("POLYSOCKET_FQDN").env_remove("POLYSOCKET_STANDALONE"));
    assert_eq!(missing_fqdn.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&missing_fqdn.stderr).contains("--fqdn"));

    let broken = tokens_file("broken", r#"{"tokens":[{"token":"x"}]}"#);
    let bad_tokens =
        run_to_exit(daemon().args(["--standalone", "--listen", "127.0.0.1:0"]).arg("--tokens").arg(&broken));
    assert_eq!(bad_tokens.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad_tokens.stderr).contains("invalid tokens file"), "{bad_tokens:?}");

    let bad_duration = run_to_exit(daemon().args(["--standalone", "--idle-timeout", "soon"]));
    assert_eq!(bad_duration.status.code(), Some(64));

    let no_ca =
        run_to_exit(daemon().args(["--standalone", "--listen", "127.0.0.1:0", "--ca-file", "/nonexistent/ca.pem"]));
    assert_eq!(no_ca.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&no_ca.stderr).contains("cannot read CA file"), "{no_ca:?}");
}

#[test]
fn a_taken_port_exits_69_not_64() {
    // The configuration is fine; the host could not give what it names.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = run_to_exit(daemon().args(["--standalone", "--listen", &addr]));
    assert_eq!(output.status.code(), Some(69), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot listen on"), "{output:?}");
}

/// Reads the daemon's log until a line contains `wanted`, and returns the
/// lines read.
fn log_until(daemon: &mut Child, wanted: &str) -> Vec<String> {
    use std::io::BufRead;
    let stderr = daemon.stderr.take().expect("stderr is piped");
    let mut read = Vec::new();
    for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
        let found = line.contains(wanted);
        read.push(line);
        if found {
            return read;
        }
    }
    panic!("no log line with {wanted:?} in {read:?}")
}

#[test]
fn the_open_files_limit_is_raised_and_a_capacity_beyond_it_is_reported() {
    // As a container runtime starts it: soft limit 1024, hard limit higher.
    let mut command = Command::new("sh");
    command
        .args(["-c", "ulimit -Sn 1024 && ulimit -Hn 8192 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_polysocketd"))
        .args(["--standalone", "--listen", "127.0.0.1:0", "--capacity", "10000"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut daemon = Running(command.spawn().unwrap());
    let log = log_until(&mut daemon.0, "--capacity 10000").join("\n");
    assert!(log.contains("open files limit: 8192 (was 1024)"), "{log}");
    // 10,000 sockets need more than 8192 descriptors: said loudly, with a way out.
    assert!(log.contains("WARN") && log.contains("near 3968 sockets"), "{log}");
}

#[actix_web::test]
async fn health_and_metrics_move_to_the_admin_listener() {
    let (port, admin_port) = (polysocket_tests::free_port(), polysocket_tests::free_port());
    let _daemon = Running(
        daemon()
            .args(["--standalone", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let admin = Http::new(admin_port);
    admin.wait_until_ok("/readyz", Duration::from_secs(20)).await;
    assert!(admin.get(None, "/metrics", &[]).await.body.contains("polysocket_socket_capacity 10000"));
    let public = Http::new(port);
    for path in ["/metrics", "/readyz", "/healthz"] {
        assert_eq!(public.get(None, path, &[]).await.status, 404, "{path} is not public");
    }
    assert_eq!(public.get(None, "/polysocket.js", &[]).await.status, 200, "the public side still serves");
}

#[actix_web::test]
async fn malformed_requests_are_counted_not_logged_and_logs_can_be_json() {
    use std::io::{BufRead, Write};
    let port = polysocket_tests::free_port();
    let log = std::env::temp_dir().join(format!("polysocket-{}-json.log", std::process::id()));
    let mut daemon = Running(
        daemon()
            .args(["--standalone", "--listen", &format!("127.0.0.1:{port}"), "--log-format", "json"])
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let http = Http::new(port);
    http.wait_until_ok("/readyz", Duration::from_secs(20)).await;
    // What an outsider can send as often as they like.
    for _ in 0..50 {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.write_all(b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let _ = std::io::Read::read(&mut conn, &mut [0; 256]);
    }
    http.wait_for_metric("polysocket_http_client_errors_total 50").await;
    let _ = daemon.0.kill();
    let _ = daemon.0.wait();

    let lines: Vec<String> =
        std::io::BufReader::new(std::fs::File::open(&log).unwrap()).lines().map_while(Result::ok).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(entry["ts"].is_string() && entry["target"].is_string() && entry["msg"].is_string(), "{line}");
        assert_ne!(entry["level"], "ERROR", "a client's malformed request is not an error of ours: {line}");
    }
}
