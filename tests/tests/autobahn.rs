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

use futures_util::StreamExt;
use polysocket_tests::free_port;
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
        let _ = std::fs::remove_dir_all(&self.reports);
    }
}

/// Plays the application: echoes what arrives until the socket closes.
/// Returns the text messages received, for the control endpoints.
async fn echo_until_closed(socket: &Socket) -> Vec<String> {
    let mut texts = Vec::new();
    let deadline = tokio::time::Instant::now() + CASE_DEADLINE;
    while tokio::time::Instant::now() < deadline {
        let reply = socket.poll_raw(&[("ttl", "1000")]).await;
        if reply.status == 403 {
            return texts;
        }
        let body = reply.jsonp(CB);
        for message in body["messages"].as_array().expect("messages") {
            let data = message["data"].as_str().unwrap_or("");
            match message["type"].as_str() {
                Some("text") => {
                    texts.push(data.to_owned());
                    socket.post("", "text/plain; charset=utf-8", data.as_bytes()).await;
                }
                Some("binary") => {
                    use base64::Engine;
                    let bytes = base64::engine::general_purpose::STANDARD.decode(data).expect("base64");
                    socket.post("", "application/octet-stream", &bytes).await;
                }
                Some("close") => {
                    // Acknowledge the close, as a well-behaved client does.
                    assert_eq!(socket.poll_raw(&[("ttl", "0")]).await.status, 403);
                    return texts;
                }
                _ => {}
            }
        }
    }
    texts
}

async fn run_through_bridge(stack: &Stack, fuzzing: &FuzzingServer, path_and_query: &str) -> Vec<String> {
    let socket = stack.open_target(&fuzzing.url(path_and_query)).await;
    echo_until_closed(&socket).await
}

fn outcomes(reports: &Path) -> BTreeMap<String, String> {
    let index = std::fs::read_to_string(reports.join("index.json")).expect("kosoku wrote index.json");
    let index: Value = serde_json::from_str(&index).expect("index.json is JSON");
    let cases = index[AGENT].as_object().expect("results for our agent");
    cases.iter().map(|(case, result)| (case.clone(), result["behavior"].as_str().unwrap().to_owned())).collect()
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
            ],
            ..Options::default()
        },
    )
    .await;
    // The fuzzing server needs a moment to listen.
    let count = polysocket_tests::eventually("the fuzzing server", Duration::from_secs(20), || async {
        let socket = stack.try_open_target(&fuzzing.url("/getCaseCount")).await?;
        echo_until_closed(&socket).await.first().and_then(|n| n.parse::<usize>().ok())
    })
    .await;
    assert!(count > 200, "expected the core sections, got {count} cases");

    futures_util::stream::iter(1..=count)
        .for_each_concurrent(PARALLEL_CASES, |case| {
            let (stack, fuzzing) = (&stack, &fuzzing);
            async move {
                run_through_bridge(stack, fuzzing, &format!("/runCase?case={case}&agent={AGENT}")).await;
            }
        })
        .await;
    run_through_bridge(&stack, &fuzzing, &format!("/updateReports?agent={AGENT}")).await;
    let index = fuzzing.reports.join("index.json");
    polysocket_tests::eventually("the Autobahn report", Duration::from_secs(30), || async {
        index.exists().then_some(())
    })
    .await;

    let actual = outcomes(&fuzzing.reports);
    assert_eq!(actual.len(), count, "every case has a result");
    let failed: Vec<&String> = actual.iter().filter(|(_, b)| b.as_str() == "FAILED").map(|(c, _)| c).collect();
    let expected_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("autobahn/expected.json");
    if std::env::var_os("UPDATE_AUTOBAHN_EXPECTED").is_some() {
        std::fs::write(&expected_path, serde_json::to_string_pretty(&actual).unwrap() + "\n").unwrap();
    }
    assert!(failed.is_empty(), "Autobahn cases FAILED through the bridge: {failed:?}");
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
