//! The Autobahn WebSocket client cases, run through the bridge: the daemon's
//! upstream client is the client under test, and this driver plays the
//! application behind it, echoing every message it receives on `/j` back
//! through `/s` with the same type.
//!
//! Needs `kosoku` (`pip install kosoku`; `scripts/test.sh` installs it). The
//! sections run are in `SECTIONS`; the outcome of every case is compared with
//! `tests/autobahn/expected.json`, and no case may be FAILED. To record a new
//! baseline after a deliberate change: `UPDATE_AUTOBAHN_EXPECTED=1 cargo test
//! -p polysocket-tests --test autobahn`.

mod support;

use awc::error::SendRequestError;
use futures_util::StreamExt;
use polysocket_tests::free_port;
use polysocket_tests::http::Reply;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::{Backend, CB, Options, Socket, Stack};

/// RFC 6455 core sections; 12 and 13 (permessage-deflate) are not offered.
const SECTIONS: &[&str] = &["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"];
const AGENT: &str = "polysocket";
/// Cases in flight at once; each one is mostly waiting on the fuzzing server.
const PARALLEL_CASES: usize = 4;
/// The longest one case may take before the driver gives up on it.
const CASE_DEADLINE: Duration = Duration::from_secs(120);

struct FuzzingServer {
    child: Child,
    port: u16,
    reports: PathBuf,
}

impl FuzzingServer {
    fn start() -> Self {
        let port = free_port();
        let reports = std::env::temp_dir().join(format!("polysocket-autobahn-{}", std::process::id()));
        let mut command = Command::new("kosoku");
        command.args(["-m", "fuzzingserver", "-o"]).arg(&reports);
        for section in SECTIONS {
            command.args(["-i", section]);
        }
        let child = command
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kosoku is needed for the Autobahn cases: pip install kosoku (scripts/test.sh installs it)");
        FuzzingServer { child, port, reports }
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("ws://127.0.0.1:{}{path_and_query}", self.port)
    }
}

impl Drop for FuzzingServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failed run keeps its reports: they hold each case's wire log.
        if std::thread::panicking() {
            eprintln!("Autobahn reports kept in {}", self.reports.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.reports);
        }
    }
}

/// Tries a request a few times: on a loaded machine a connection can be
/// reset, or answered 408 when the request head came late (the server never
/// saw the request). `seq` and `ack` make every request here safe to repeat.
async fn with_retries<F: Future<Output = Result<Reply, SendRequestError>>>(
    what: &str,
    mut send: impl FnMut() -> F,
) -> Reply {
    let mut attempt = 1;
    loop {
        let failure = match send().await {
            Ok(reply) if reply.status != 408 => return reply,
            Ok(reply) => format!("{reply:?}"),
            Err(e) => e.to_string(),
        };
        assert!(attempt < 5, "{what} failed {attempt} times, last: {failure}");
        log::warn!("{what} failed ({failure}); retrying");
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the application saw of one socket, for the report of a failed case.
#[derive(Default)]
struct Transcript {
    /// The text messages received, for the control endpoints.
    texts: Vec<String>,
    /// The bridge's last message (`type: close`, with code and reason).
    close: Option<Value>,
    /// Echo sends the daemon did not accept, with their answers.
    refused_echoes: Vec<String>,
}

/// Plays the application: echoes what arrives until the socket closes, with
/// explicit `ack` and `seq` so a lost answer or a retried send loses and
/// doubles nothing.
async fn echo_until_closed(socket: &Socket) -> Transcript {
    let mut transcript = Transcript::default();
    let (mut acked, mut sent) = (0u64, 0u64);
    let deadline = tokio::time::Instant::now() + CASE_DEADLINE;
    while tokio::time::Instant::now() < deadline {
        let params = [("ttl", "1000".to_owned()), ("ack", acked.to_string())];
        let reply = with_retries("poll", || socket.try_poll_owned(&params)).await;
        if reply.status == 403 {
            return transcript;
        }
        let body = reply.jsonp(CB);
        for message in body["messages"].as_array().expect("messages") {
            let Some(seq) = message["seq"].as_u64() else { continue };
            if seq <= acked {
                continue;
            }
            acked = seq;
            let data = message["data"].as_str().unwrap_or("");
            let (content_type, bytes) = match message["type"].as_str() {
                Some("text") => {
                    transcript.texts.push(data.to_owned());
                    ("text/plain; charset=utf-8", data.as_bytes().to_vec())
                }
                Some("binary") => {
                    use base64::Engine;
                    (
                        "application/octet-stream",
                        base64::engine::general_purpose::STANDARD.decode(data).expect("base64"),
                    )
                }
                _ => {
                    // The close: acknowledge it, as a well-behaved client does.
                    transcript.close = Some(message.clone());
                    let params = [("ttl", "0".to_owned()), ("ack", seq.to_string())];
                    let last = with_retries("poll", || socket.try_poll_owned(&params)).await;
                    assert_eq!(last.status, 403, "{last:?}");
                    return transcript;
                }
            };
            sent += 1;
            let path = format!("?seq={sent}");
            // The fuzzing server may be failing the socket right now; the
            // case's outcome says whether the daemon did the right thing.
            let echo = with_retries("echo", || socket.try_post(&path, content_type, &bytes)).await;
            if !(200..300).contains(&echo.status) {
                transcript.refused_echoes.push(format!("echo {sent}: {} {}", echo.status, echo.body));
            }
        }
    }
    transcript
}

async fn run_through_bridge(stack: &Stack, fuzzing: &FuzzingServer, path_and_query: &str) -> Transcript {
    let socket = stack.open_target(&fuzzing.url(path_and_query)).await;
    echo_until_closed(&socket).await
}

/// Each case's behaviour from the report, once the report is complete.
fn outcomes(index: &Path) -> Option<BTreeMap<String, String>> {
    let index: Value = serde_json::from_str(&std::fs::read_to_string(index).ok()?).ok()?;
    let cases = index[AGENT].as_object()?;
    cases.iter().map(|(case, result)| Some((case.clone(), result["behavior"].as_str()?.to_owned()))).collect()
}

#[actix_web::test]
async fn autobahn_client_cases_through_the_bridge() {
    let fuzzing = FuzzingServer::start();
    let stack = Stack::start(
        Backend::Memory,
        Options {
            daemons: 1,
            daemon_args: vec![
                "--allow-private-targets",
                // Section 9 sends messages of up to 16 MiB.
                "--max-message-bytes",
                "20000000",
                "--max-queue-bytes",
                "40000000",
                "--max-handshakes-per-host",
                "64",
                // Section 9 sends thousands of messages as fast as it can.
                "--max-sends-per-second",
                "0",
                // The fuzzing server ends a case as soon as it gets a ping it
                // did not ask for (its cases' `onPing` calls
                // `finishWhenDone`, which closes when nothing more is
                // expected), so keepalive pings must not fall inside a case;
                // on a loaded machine the longest cases take over 7 s, the
                // shortest ping interval. Keepalive has tests of its own.
                "--ping-interval",
                "10min",
            ],
            // A daemon worker takes its own creates: while a debug build
            // spends seconds on section 9's 16 MiB messages, a create for
            // another case waits for that worker to take it, longer than
            // the default accept timeout (a release build takes
            // milliseconds).
            router_args: vec!["--accept-timeout", "60s"],
            ..Options::default()
        },
    )
    .await;
    // The fuzzing server needs a moment to listen.
    let count = polysocket_tests::eventually("the fuzzing server", Duration::from_secs(20), || async {
        let socket = stack.try_open_target(&fuzzing.url("/getCaseCount")).await?;
        echo_until_closed(&socket).await.texts.first().and_then(|n| n.parse::<usize>().ok())
    })
    .await;
    assert!(count > 200, "expected the core sections, got {count} cases");

    // The bridge's side of each case, by case number.
    let transcripts: BTreeMap<usize, Transcript> =
        futures_util::stream::iter(1..=count)
            .map(|case| {
                let (stack, fuzzing) = (&stack, &fuzzing);
                async move {
                    (case, run_through_bridge(stack, fuzzing, &format!("/runCase?case={case}&agent={AGENT}")).await)
                }
            })
            .buffer_unordered(PARALLEL_CASES)
            .collect()
            .await;
    run_through_bridge(&stack, &fuzzing, &format!("/updateReports?agent={AGENT}")).await;
    // The report is written after the control connection closes, and not
    // atomically: wait until it parses.
    let index = fuzzing.reports.join("index.json");
    let actual =
        polysocket_tests::eventually("the Autobahn report", Duration::from_secs(30), || async { outcomes(&index) })
            .await;

    assert_eq!(actual.len(), count, "every case has a result");
    let failed: Vec<&String> = actual.iter().filter(|(_, b)| b.as_str() == "FAILED").map(|(c, _)| c).collect();
    let expected_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("autobahn/expected.json");
    if std::env::var_os("UPDATE_AUTOBAHN_EXPECTED").is_some() {
        std::fs::write(&expected_path, serde_json::to_string_pretty(&actual).unwrap() + "\n").unwrap();
    }
    let why: Vec<String> = failed
        .iter()
        .map(|case| {
            let report = fuzzing.reports.join(format!("{AGENT}_case_{}.json", case.replace('.', "_")));
            let report: Value =
                std::fs::read_to_string(report).ok().and_then(|r| serde_json::from_str(&r).ok()).unwrap_or_default();
            let bridge = report["case"].as_u64().and_then(|n| transcripts.get(&(n as usize)));
            format!(
                "{case} after {} ms: {} (close: {}; closed by the fuzzing server: {}, remote close {} {}); the bridge told the client {}, refused echoes {:?}",
                report["duration"],
                report["result"],
                report["resultClose"],
                report["closedByMe"],
                report["remoteCloseCode"],
                report["remoteCloseReason"],
                bridge.and_then(|t| t.close.as_ref()).map_or("nothing".to_owned(), Value::to_string),
                bridge.map(|t| &t.refused_echoes),
            )
        })
        .collect();
    assert!(failed.is_empty(), "Autobahn cases FAILED through the bridge: {why:#?}");
    let expected: BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(&expected_path).expect("expected results are committed"))
            .expect("expected.json is a case -> behavior map");
    let changed: Vec<String> = actual
        .iter()
        .filter(|(case, behavior)| expected.get(*case) != Some(behavior))
        .map(|(case, behavior)| format!("{case}: {} -> {behavior}", expected.get(case).map_or("none", |s| s)))
        .collect();
    assert!(changed.is_empty(), "Autobahn outcomes differ from tests/autobahn/expected.json: {changed:?}");
}
