//! Load generator: N simulated clients, each doing round trips (send a
//! message, wait for its echo) for a fixed time, against polysocket or a
//! baseline. Prints one JSON line of figures per run; `scripts/bench.sh`
//! runs the scenarios and builds the table.
//!
//! Systems:
//! - `polysocket`: `/create`, then `POST /s` and long-poll `/j` with `ack`
//!   until the echo arrives;
//! - `floor`: one HTTP request per round trip to a minimal actix-web
//!   handler (`serve-floor`), what the machine does with no bridging at all;
//! - `websocket`: a direct WebSocket client to the echo server.

use awc::ws;
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Round trips through polysocket.
    Polysocket {
        /// Where /create is served (a router, or polysocketd --standalone).
        #[arg(long)]
        router: SocketAddr,
        /// The upstream echo server.
        #[arg(long)]
        target: String,
        #[arg(long, default_value = "dev")]
        token: String,
        #[command(flatten)]
        load: Load,
    },
    /// Round trips as single HTTP requests to `serve-floor`.
    Floor {
        #[arg(long)]
        server: SocketAddr,
        #[command(flatten)]
        load: Load,
    },
    /// Round trips over direct WebSocket connections to the echo server.
    Websocket {
        #[arg(long)]
        target: String,
        #[command(flatten)]
        load: Load,
    },
    /// Serves the floor: `GET /echo?d=...` answers `d`.
    ServeFloor {
        #[arg(long)]
        listen: SocketAddr,
    },
}

#[derive(clap::Args, Clone, Copy)]
struct Load {
    /// Concurrent clients, each with its own socket.
    #[arg(long, default_value_t = 1)]
    sockets: usize,
    /// How long to measure, after every client is connected.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

fn client() -> awc::Client {
    let connector = awc::Connector::new().limit(0).conn_keep_alive(Duration::from_secs(2));
    awc::Client::builder().connector(connector).timeout(Duration::from_secs(60)).finish()
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    match Args::parse().command {
        Command::ServeFloor { listen } => {
            actix_web::HttpServer::new(|| {
                actix_web::App::new().route(
                    "/echo",
                    actix_web::web::get().to(|q: actix_web::web::Query<Vec<(String, String)>>| async move {
                        q.into_inner().into_iter().find(|(k, _)| k == "d").map(|(_, v)| v).unwrap_or_default()
                    }),
                )
            })
            .bind(listen)?
            .run()
            .await
        }
        Command::Polysocket { router, target, token, load } => {
            report("polysocket", load, run(load, |n| polysocket_client(n, router, target.clone(), token.clone())).await)
        }
        Command::Floor { server, load } => report("floor", load, run(load, move |n| floor_client(n, server)).await),
        Command::Websocket { target, load } => {
            report("websocket", load, run(load, |n| websocket_client(n, target.clone())).await)
        }
    }
}

/// What the clients measured: round-trip latencies in microseconds, and the
/// round trips that failed (with the first failure, to say why).
#[derive(Default)]
struct Measured {
    latencies: Vec<u32>,
    errors: usize,
    first_error: Option<String>,
}

/// Starts `load.sockets` clients, lets them run, and gathers their latencies.
/// Each client gets its number and the deadline (after its own setup, it
/// loops until then).
async fn run<F, Fut>(load: Load, start: F) -> Result<(Measured, Duration), String>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<Box<dyn Trip>, String>>,
{
    let clients = futures_util::future::join_all((0..load.sockets).map(&start)).await;
    let mut clients: Vec<Box<dyn Trip>> = clients.into_iter().collect::<Result<_, _>>()?;
    let began = Instant::now();
    let deadline = began + Duration::from_secs(load.seconds);
    let loops = clients.iter_mut().map(|client| async move {
        let mut measured = Measured::default();
        while Instant::now() < deadline {
            let t0 = Instant::now();
            match client.round_trip().await {
                Ok(()) => measured.latencies.push(t0.elapsed().as_micros() as u32),
                Err(e) => {
                    measured.errors += 1;
                    measured.first_error.get_or_insert(e);
                }
            }
        }
        measured
    });
    let all = futures_util::future::join_all(loops).await;
    let elapsed = began.elapsed();
    let mut total = Measured::default();
    for one in all {
        total.latencies.extend(one.latencies);
        total.errors += one.errors;
        total.first_error = total.first_error.or(one.first_error);
    }
    Ok((total, elapsed))
}

fn report(system: &str, load: Load, outcome: Result<(Measured, Duration), String>) -> std::io::Result<()> {
    let (measured, elapsed) = outcome.map_err(std::io::Error::other)?;
    let mut latencies = measured.latencies;
    latencies.sort_unstable();
    let pick = |q: f64| latencies.get(((latencies.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0);
    let line = json!({
        "system": system,
        "sockets": load.sockets,
        "seconds": elapsed.as_secs_f64(),
        "round_trips": latencies.len(),
        "per_second": latencies.len() as f64 / elapsed.as_secs_f64(),
        "p50_ms": f64::from(pick(0.50)) / 1000.0,
        "p99_ms": f64::from(pick(0.99)) / 1000.0,
        "errors": measured.errors,
        "first_error": measured.first_error,
    });
    println!("{line}");
    Ok(())
}

/// One client's round trip: send a message, wait for its echo.
trait Trip {
    fn round_trip(&mut self) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + '_>>;
}

struct PolysocketClient {
    http: awc::Client,
    daemon: SocketAddr,
    host: String,
    socket: String,
    seq: u64,
    acked: u64,
}

async fn get_json(http: &awc::Client, addr: SocketAddr, host: &str, path: &str) -> Result<(u16, Value), String> {
    let mut response =
        http.get(format!("http://{host}{path}")).address(addr).send().await.map_err(|e| format!("GET {path}: {e}"))?;
    let body = response.body().limit(16 << 20).await.map_err(|e| e.to_string())?;
    Ok((response.status().as_u16(), serde_json::from_slice(&body).map_err(|e| e.to_string())?))
}

async fn polysocket_client(
    n: usize,
    router: SocketAddr,
    target: String,
    token: String,
) -> Result<Box<dyn Trip>, String> {
    let http = client();
    let query =
        serde_urlencoded::to_string([("from", "loadgen"), ("target", target.as_str()), ("token", token.as_str())])
            .expect("strings encode");
    let (_, created) = get_json(&http, router, &router.to_string(), &format!("/create?{query}")).await?;
    if created["ok"] != true {
        return Err(format!("client {n}: create failed: {created}"));
    }
    let host = created["fqdn"].as_str().unwrap_or_default().to_owned();
    let port: u16 = host.rsplit(':').next().and_then(|p| p.parse().ok()).ok_or("fqdn without a port")?;
    let daemon = SocketAddr::new(router.ip(), port);
    let socket = created["socket"].as_str().unwrap_or_default().to_owned();
    Ok(Box::new(PolysocketClient { http, daemon, host, socket, seq: 0, acked: 0 }))
}

impl Trip for PolysocketClient {
    fn round_trip(&mut self) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + '_>> {
        Box::pin(async move {
            self.seq += 1;
            let path = format!("/s/{}?seq={}", self.socket, self.seq);
            let sent = self
                .http
                .post(format!("http://{}{path}", self.host))
                .address(self.daemon)
                .insert_header(("content-type", "text/plain"))
                .send_body(format!("m{}", self.seq))
                .await
                .map_err(|e| format!("POST {path}: {e}"))?;
            if sent.status().as_u16() != 201 {
                return Err(format!("send answered {}", sent.status()));
            }
            loop {
                let path = format!("/j/{}?ttl=5000&ack={}", self.socket, self.acked);
                let (status, answer) = get_json(&self.http, self.daemon, &self.host, &path).await?;
                if status != 200 {
                    return Err(format!("poll answered {status}: {answer}"));
                }
                for message in answer["messages"].as_array().into_iter().flatten() {
                    if let Some(seq) = message["seq"].as_u64() {
                        self.acked = self.acked.max(seq);
                    }
                }
                if self.acked >= self.seq {
                    return Ok(());
                }
            }
        })
    }
}

struct FloorClient {
    http: awc::Client,
    server: SocketAddr,
    n: u64,
}

async fn floor_client(_: usize, server: SocketAddr) -> Result<Box<dyn Trip>, String> {
    Ok(Box::new(FloorClient { http: client(), server, n: 0 }))
}

impl Trip for FloorClient {
    fn round_trip(&mut self) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + '_>> {
        Box::pin(async move {
            self.n += 1;
            let mut response = self
                .http
                .get(format!("http://{}/echo?d=m{}", self.server, self.n))
                .send()
                .await
                .map_err(|e| format!("floor GET: {e}"))?;
            let body = response.body().await.map_err(|e| e.to_string())?;
            if body != format!("m{}", self.n).as_bytes() {
                return Err(format!("the floor answered {}: {body:?}", response.status()));
            }
            Ok(())
        })
    }
}

struct WebsocketClient {
    framed: actix_codec::Framed<awc::BoxedSocket, ws::Codec>,
    n: u64,
}

async fn websocket_client(_: usize, target: String) -> Result<Box<dyn Trip>, String> {
    let (_, framed) = client().ws(target).connect().await.map_err(|e| format!("websocket: {e}"))?;
    Ok(Box::new(WebsocketClient { framed, n: 0 }))
}

impl Trip for WebsocketClient {
    fn round_trip(&mut self) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + '_>> {
        Box::pin(async move {
            self.n += 1;
            let text = format!("m{}", self.n);
            self.framed.send(ws::Message::Text(text.clone().into())).await.map_err(|e| e.to_string())?;
            loop {
                match self.framed.next().await {
                    Some(Ok(ws::Frame::Text(data))) if data == text.as_bytes() => return Ok(()),
                    Some(Ok(_)) => {}
                    other => return Err(format!("websocket ended: {other:?}")),
                }
            }
        })
    }
}
