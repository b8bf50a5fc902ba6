//! Running simulated clients and summing up what they measured.

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Clients being set up at once: more would only overflow the servers'
/// accept backlogs and measure SYN retries.
const SETUP_CONCURRENCY: usize = 256;

#[derive(clap::Args, Clone, Copy)]
pub struct Load {
    /// Concurrent clients, each with its own socket.
    #[arg(long, default_value_t = 1)]
    pub sockets: usize,
    /// How long to measure, after every client is set up.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// The bridge's process: its CPU time (user and system, from /proc)
    /// during the measurement is reported per operation, a figure that does
    /// not depend on sharing cores with the load generator.
    #[arg(long)]
    pub pid: Option<u32>,
}

/// CPU time (user + system, all threads) process `pid` has used so far.
/// /proc counts it in USER_HZ ticks, which Linux fixes at 100 a second.
fn cpu_time(pid: u32) -> Result<Duration, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("process {pid}: {e}"))?;
    // The command name (field 2) may hold spaces; utime and stime are the
    // 12th and 13th fields after its closing parenthesis.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks =
        |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).ok_or(format!("malformed /proc/{pid}/stat"));
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// One client's unit of work: a round trip (send, then wait for the echo),
/// a send alone, or a create.
pub trait Operation {
    fn run(&mut self) -> Pin<Box<dyn Future<Output = Result<(), String>> + '_>>;

    /// A receive that waits for messages, as an idle long-polling client
    /// keeps one waiting (see [`idle_memory`]).
    fn wait(&mut self) -> Pin<Box<dyn Future<Output = Result<(), String>> + '_>> {
        Box::pin(std::future::ready(Err("this client cannot wait in a poll".to_owned())))
    }

    /// Ends the client's session, so that the next run starts with a server
    /// that holds nothing (not measured; failures do not matter).
    fn finish(&mut self) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        Box::pin(std::future::ready(()))
    }
}

pub type Client = Box<dyn Operation>;

/// What the clients measured: latencies in microseconds, the operations
/// that failed (with the first failure, to say why), and how many operations
/// each client completed: in a closed loop a server that serves some clients
/// before others shows it there first, long before the percentiles explain why.
#[derive(Default)]
pub struct Measured {
    latencies: Vec<u32>,
    per_client: Vec<usize>,
    errors: usize,
    first_error: Option<String>,
    last_ended: Option<Instant>,
    /// CPU time of `Load::pid` while the operations ran.
    cpu: Option<Duration>,
    /// Resident memory of `Load::pid` as the operations ended, every client
    /// still connected.
    rss_kib: Option<u64>,
}

impl Measured {
    fn record(&mut self, started: Instant, outcome: Result<(), String>) {
        self.last_ended = Some(Instant::now());
        match outcome {
            Ok(()) => self.latencies.push(started.elapsed().as_micros().try_into().unwrap_or(u32::MAX)),
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    fn merge(&mut self, other: Measured) {
        self.per_client.push(other.latencies.len());
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.last_ended = self.last_ended.max(other.last_ended);
    }
}

/// Sets up `load.sockets` clients with `start` (given each client's number),
/// then runs their operations until the time is up.
pub async fn run<F, Fut>(load: Load, start: F) -> Result<(Measured, Duration), String>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<Client, String>>,
{
    let mut clients = set_up(load.sockets, start).await?;
    // One unmeasured operation each first, so that what happens once per
    // session (a gateway's session start, a socket's first upstream frame)
    // is not counted as steady state.
    let warm_up = futures_util::future::join_all(clients.iter_mut().map(|client| client.run())).await;
    if let Some(Err(e)) = warm_up.into_iter().find(Result::is_err) {
        return Err(format!("warm-up: {e}"));
    }
    let cpu_before = load.pid.map(cpu_time).transpose()?;
    let began = Instant::now();
    let deadline = began + Duration::from_secs(load.seconds);
    let loops = clients.into_iter().map(|mut client| async move {
        let mut measured = Measured::default();
        while Instant::now() < deadline {
            let started = Instant::now();
            let outcome = client.run().await;
            measured.record(started, outcome);
        }
        client.finish().await;
        measured
    });
    let mut total = Measured::default();
    let measured = futures_util::future::join_all(loops).await;
    // Before the sessions end (that is in `loops` too, but after every
    // operation: a close costs little beside seconds of operations).
    if let (Some(pid), Some(before)) = (load.pid, cpu_before) {
        total.cpu = Some(cpu_time(pid)?.saturating_sub(before));
        total.rss_kib = Some(resident_kib(pid)?);
    }
    for one in measured {
        total.merge(one);
    }
    // Until the last operation ended: ending the sessions is not measured.
    let elapsed = total.last_ended.map_or(Duration::ZERO, |ended| ended - began);
    Ok((total, elapsed))
}

/// Server memory per idle client, measured the same way for every system:
/// one client is set up and carries a round trip (what a first session
/// warms up once is in the baseline); then `load.sockets` more are set up,
/// each carries a round trip, and each waits in a poll, as an idle
/// long-polling client does. While the polls wait, after the allocators
/// have had time to give freed pages back, the growth of the server's
/// resident memory (`load.pid`) is divided by the clients.
pub async fn idle_memory<F, Fut>(system: &str, load: Load, start: F) -> Result<Value, String>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<Client, String>>,
{
    let pid = load.pid.ok_or("idle memory needs the server's --pid")?;
    let mut first = start(0).await?;
    first.run().await?;
    let before = resident_kib(pid)?;
    let mut clients = set_up(load.sockets, |n| start(n + 1)).await?;
    for outcome in futures_util::future::join_all(clients.iter_mut().map(|client| client.run())).await {
        outcome.map_err(|e| format!("round trip: {e}"))?;
    }
    let waits = futures_util::future::join_all(clients.iter_mut().map(|client| client.wait()));
    let after = tokio::select! {
        answered = waits => {
            let why = answered.into_iter().find_map(Result::err).unwrap_or_else(|| "a message".to_owned());
            return Err(format!("a poll was answered while the clients idled: {why}"));
        }
        after = async {
            tokio::time::sleep(Duration::from_secs(IDLE_SETTLE_SECS)).await;
            resident_kib(pid)
        } => after?,
    };
    Ok(json!({
        "system": system,
        "scenario": "idle-memory-polling",
        "sockets": load.sockets,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_socket": after.saturating_sub(before) as f64 / load.sockets as f64,
    }))
}

/// How long idle clients are left before the server's memory is read:
/// jemalloc gives freed pages back to the system after about 10 s. Shorter
/// than the peers' 25 s heartbeats, which would answer a waiting poll.
pub const IDLE_SETTLE_SECS: u64 = 12;

/// The resident set size of a process, in KiB (Linux).
pub fn resident_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("process {pid}: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS for process {pid}"))
}

/// Sets up `count` clients, a bounded number at a time.
async fn set_up<F, Fut>(count: usize, start: F) -> Result<Vec<Client>, String>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<Client, String>>,
{
    futures_util::stream::iter(0..count)
        .map(start)
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Prints one JSON line of figures (see [`summary`]).
pub fn report(system: &str, scenario: &str, load: Load, outcome: Result<(Measured, Duration), String>) {
    print_line(summary(system, scenario, load, outcome));
}

/// One run's figures: operations per second and latency percentiles, under
/// `system` and `scenario`. A run that could not start (its clients could
/// not be set up) has `failed` and why, so the other runs still make a table.
pub fn summary(system: &str, scenario: &str, load: Load, outcome: Result<(Measured, Duration), String>) -> Value {
    let (measured, elapsed) = match outcome {
        Ok(outcome) => outcome,
        Err(failed) => {
            return json!({"system": system, "scenario": scenario, "sockets": load.sockets, "failed": failed});
        }
    };
    let mut latencies = measured.latencies;
    latencies.sort_unstable();
    let pick = |q: f64| latencies.get(((latencies.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0);
    let slowest_client = measured.per_client.iter().copied().min().unwrap_or(0);
    let fastest_client = measured.per_client.iter().copied().max().unwrap_or(0);
    json!({
        "system": system,
        "scenario": scenario,
        "sockets": load.sockets,
        "seconds": elapsed.as_secs_f64(),
        "operations": latencies.len(),
        "per_second": latencies.len() as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
        "p50_ms": f64::from(pick(0.50)) / 1000.0,
        "p90_ms": f64::from(pick(0.90)) / 1000.0,
        "p99_ms": f64::from(pick(0.99)) / 1000.0,
        "p999_ms": f64::from(pick(0.999)) / 1000.0,
        "max_ms": f64::from(pick(1.0)) / 1000.0,
        "slowest_client_ops": slowest_client,
        "fastest_client_ops": fastest_client,
        // 1.0: every client was served alike.
        "fairness": slowest_client as f64 / fastest_client.max(1) as f64,
        "errors": measured.errors,
        "first_error": measured.first_error,
        "cpu_us_per_op": measured.cpu.map(|cpu| cpu.as_secs_f64() * 1e6 / latencies.len().max(1) as f64),
        "rss_kib": measured.rss_kib,
    })
}

pub fn print_line(line: Value) {
    println!("{line}");
}

/// One HTTP/1.1 keep-alive connection, as each simulated client holds its
/// own: no pool between the client and the server, so what is measured is
/// the server, and every client's requests queue only behind its own.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    forwarded_for: Option<String>,
}

/// A response: its status and its body as text.
pub struct Answer {
    pub status: u16,
    pub text: String,
}

impl Connection {
    /// Connects to `addr`, naming `host` in requests (a daemon serves each
    /// socket under its own host name).
    pub async fn open(addr: SocketAddr, host: &str) -> Result<Self, String> {
        let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
        actix_web::rt::spawn(connection);
        Ok(Connection { sender, host: host.to_owned(), forwarded_for: None })
    }

    /// Names a client address in every request, as a load balancer would.
    pub fn forwarding_for(mut self, client: impl ToString) -> Self {
        self.forwarded_for = Some(client.to_string());
        self
    }

    pub async fn get(&mut self, what: &str, path: &str) -> Result<Answer, String> {
        Answer::read(what, self.send(what, Method::GET, path, None, Bytes::new(), false).await?).await
    }

    pub async fn post(&mut self, what: &str, path: &str, content_type: &str, body: String) -> Result<Answer, String> {
        Answer::read(what, self.send(what, Method::POST, path, Some(content_type), body.into(), false).await?).await
    }

    /// Starts a streaming response (status 200 expected) and returns its
    /// body to be read as it arrives; `gzip` asks for it gzipped.
    pub async fn stream(&mut self, what: &str, method: Method, path: &str, gzip: bool) -> Result<Streamed, String> {
        let response = self.send(what, method, path, None, Bytes::new(), gzip).await?;
        if response.status() != 200 {
            let status = response.status();
            let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            return Err(format!("{what} answered {status}: {}", String::from_utf8_lossy(&body)));
        }
        let gzipped = response.headers().get("content-encoding").is_some_and(|v| v == "gzip");
        let gunzip = gzipped.then(|| flate2::write::GzDecoder::new(Vec::new()));
        Ok(Streamed { body: response.into_body(), buffered: Vec::new(), gunzip })
    }

    async fn send(
        &mut self,
        what: &str,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
        accept_gzip: bool,
    ) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        let mut request = Request::builder().method(method).uri(path).header(HOST, &self.host);
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        if accept_gzip {
            request = request.header("accept-encoding", "gzip");
        }
        if let Some(client) = &self.forwarded_for {
            request = request.header("x-forwarded-for", client);
        }
        let request = request.body(Full::new(body)).map_err(|e| format!("{what}: {e}"))?;
        self.sender.ready().await.map_err(|e| format!("{what}: {e}"))?;
        self.sender.send_request(request).await.map_err(|e| format!("{what}: {e}"))
    }
}

/// A response body read as it arrives, split into frames by a separator.
pub struct Streamed {
    body: hyper::body::Incoming,
    buffered: Vec<u8>,
    /// For a gzipped response: decodes each chunk as it comes.
    gunzip: Option<flate2::write::GzDecoder<Vec<u8>>>,
}

impl Streamed {
    /// The next frame (without `separator`), or `None` once the response has ended.
    pub async fn next(&mut self, separator: &[u8]) -> Result<Option<String>, String> {
        loop {
            if let Some(at) = self.buffered.windows(separator.len()).position(|w| w == separator) {
                let frame: Vec<u8> = self.buffered.drain(..at + separator.len()).take(at).collect();
                return String::from_utf8(frame).map(Some).map_err(|_| "a frame is not UTF-8".to_owned());
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(format!("stream: {e}")),
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    match &mut self.gunzip {
                        Some(gunzip) => {
                            let decoded = gunzip.write_all(&data).and_then(|()| gunzip.flush());
                            decoded.map_err(|e| format!("stream: gzip: {e}"))?;
                            self.buffered.append(gunzip.get_mut());
                        }
                        None => self.buffered.extend_from_slice(&data),
                    }
                }
            }
        }
    }
}

impl Answer {
    /// Reads a whole response.
    async fn read(what: &str, response: hyper::Response<hyper::body::Incoming>) -> Result<Answer, String> {
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| format!("{what}: {e}"))?.to_bytes();
        let text = String::from_utf8(body.into()).map_err(|_| format!("{what}: the answer is not UTF-8"))?;
        Ok(Answer { status, text })
    }

    /// The body, if the status is `expected`.
    pub fn expect(self, what: &str, expected: u16) -> Result<String, String> {
        if self.status == expected {
            Ok(self.text)
        } else {
            Err(format!("{what} answered {}: {}", self.status, self.text))
        }
    }
}
