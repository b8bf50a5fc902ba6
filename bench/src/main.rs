//! Load generator: N simulated clients, each running one operation after
//! another (a round trip, a send or a create) against polysocket, a peer
//! gateway or a baseline. Prints one JSON line of figures per run;
//! `scripts/bench.sh` runs the scenarios and builds the table.

mod baselines;
mod fleet_sim;
mod peers;
mod polysocket;
mod run;
mod streaming;

use clap::{Parser, Subcommand};
use polysocket::Creating;
use run::{Load, report};
use std::net::SocketAddr;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Round trips (or sends) through polysocket.
    Polysocket {
        /// The system's name in the results, to tell deployments apart.
        #[arg(long, default_value = "polysocket")]
        name: String,
        #[command(flatten)]
        creating: Creating,
        /// Only send (`POST /s`), never poll: the send path alone. Use an
        /// upstream that discards what it gets.
        #[arg(long)]
        send_only: bool,
        /// Instead of a timed run: server memory per idle client, each
        /// after a round trip, waiting in a poll (`--pid`: the server).
        #[arg(long)]
        idle_memory: bool,
        #[command(flatten)]
        load: Load,
    },
    /// Creates per second: each client creates sockets one after another,
    /// from its own address (X-Forwarded-For: start the router with
    /// `--trusted-proxies 127.0.0.1/32`).
    Creates {
        #[command(flatten)]
        creating: Creating,
        #[command(flatten)]
        load: Load,
    },
    /// Daemon memory per idle socket: creates the sockets, then reads the
    /// daemon's resident set size (Linux /proc).
    IdleMemory {
        #[command(flatten)]
        creating: Creating,
        #[arg(long, default_value_t = 10_000)]
        sockets: usize,
        /// The daemon's process id.
        #[arg(long)]
        pid: u32,
    },
    /// Round trips (or, with `--push`, pushed messages) over polysocket's
    /// streaming receive (`/j?stream=ndjson`), sends by `POST /s`.
    PolysocketStream {
        #[command(flatten)]
        creating: Creating,
        /// Count messages the upstream pushes (target `/push?hz=N`) instead
        /// of round trips.
        #[arg(long)]
        push: bool,
        /// Ask for streams gzipped (reported as polysocket-stream-gzip).
        #[arg(long)]
        gzip: bool,
        #[command(flatten)]
        load: Load,
    },
    /// The same over a SockJS gateway's streaming transports.
    SockjsStream {
        #[arg(long)]
        gateway: SocketAddr,
        #[arg(long, value_enum)]
        transport: streaming::SockjsStreaming,
        #[arg(long)]
        push: bool,
        #[command(flatten)]
        load: Load,
    },
    /// Round trips through a SockJS gateway (`bench/peers/gateway.js`).
    Sockjs {
        #[arg(long)]
        gateway: SocketAddr,
        #[arg(long, value_enum, default_value = "xhr")]
        transport: peers::SockjsTransport,
        /// Instead of a timed run: server memory per idle client, each
        /// after a round trip, waiting in a poll (`--pid`: the server).
        #[arg(long)]
        idle_memory: bool,
        #[command(flatten)]
        load: Load,
    },
    /// Round trips through an Engine.IO gateway over polling.
    EngineIo {
        #[arg(long)]
        gateway: SocketAddr,
        /// Instead of a timed run: server memory per idle client, each
        /// after a round trip, waiting in a poll (`--pid`: the server).
        #[arg(long)]
        idle_memory: bool,
        #[command(flatten)]
        load: Load,
    },
    /// Round trips as single HTTP requests to `serve-floor` (with `--post`,
    /// sends as single POSTs).
    Floor {
        #[arg(long)]
        server: SocketAddr,
        #[arg(long)]
        post: bool,
        /// Instead of a timed run: server memory per idle client, each
        /// after a round trip, waiting in a request that is never answered
        /// (`--pid`: the server).
        #[arg(long)]
        idle_memory: bool,
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
    /// Creates through a real router to N simulated daemons in a real Redis:
    /// the control plane's cost as the fleet grows.
    FleetSim(fleet_sim::FleetSim),
    /// Serves the floor.
    ServeFloor {
        #[arg(long)]
        listen: SocketAddr,
    },
}

/// Prints a memory figure, or why it could not be taken.
fn report_idle(system: &str, load: Load, outcome: Result<serde_json::Value, String>) {
    run::print_line(outcome.unwrap_or_else(|failed| {
        serde_json::json!({"system": system, "scenario": "idle-memory-polling", "sockets": load.sockets, "failed": failed})
    }));
}

fn stream_mode(push: bool) -> (streaming::Mode, &'static str) {
    if push { (streaming::Mode::Push, "push") } else { (streaming::Mode::RoundTrip, "round-trip-stream") }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    match Args::parse().command {
        Command::ServeFloor { listen } => return baselines::serve(listen).await,
        Command::FleetSim(args) => run::print_line(fleet_sim::run(args).await.map_err(std::io::Error::other)?),
        Command::Polysocket { name, creating, idle_memory: true, load, .. } => {
            report_idle(&name, load, run::idle_memory(&name, load, |_| polysocket::bridged(&creating, false)).await);
        }
        Command::Polysocket { name, creating, send_only, load, .. } => {
            let scenario = if send_only { "send" } else { "round-trip" };
            report(&name, scenario, load, run::run(load, |_| polysocket::bridged(&creating, send_only)).await);
        }
        Command::Creates { creating, load } => {
            report("polysocket", "create", load, run::run(load, |n| polysocket::creator(n, creating.clone())).await);
        }
        Command::IdleMemory { creating, sockets, pid } => {
            run::print_line(polysocket::idle_memory(&creating, sockets, pid).await.map_err(std::io::Error::other)?);
        }
        Command::PolysocketStream { creating, push, gzip, load } => {
            let (mode, scenario) = stream_mode(push);
            let system = if gzip { "polysocket-stream-gzip" } else { "polysocket-stream" };
            report(system, scenario, load, run::run(load, |_| streaming::polysocket(&creating, mode, gzip)).await);
        }
        Command::SockjsStream { gateway, transport, push, load } => {
            let (mode, scenario) = stream_mode(push);
            let system = match transport {
                streaming::SockjsStreaming::XhrStreaming => "sockjs-xhr-streaming",
                streaming::SockjsStreaming::Eventsource => "sockjs-eventsource",
            };
            report(system, scenario, load, run::run(load, |n| streaming::sockjs(n, gateway, transport, mode)).await);
        }
        Command::Sockjs { gateway, transport, idle_memory, load } => {
            let system = match transport {
                peers::SockjsTransport::Xhr => "sockjs-xhr",
                peers::SockjsTransport::Jsonp => "sockjs-jsonp",
            };
            let start = |n| peers::sockjs(n, gateway, transport);
            match idle_memory {
                true => report_idle(system, load, run::idle_memory(system, load, start).await),
                false => report(system, "round-trip", load, run::run(load, start).await),
            }
        }
        Command::EngineIo { gateway, idle_memory, load } => {
            let start = |_| peers::engine_io(gateway);
            match idle_memory {
                true => report_idle("engine.io", load, run::idle_memory("engine.io", load, start).await),
                false => report("engine.io", "round-trip", load, run::run(load, start).await),
            }
        }
        Command::Floor { server, idle_memory: true, load, .. } => {
            report_idle("floor", load, run::idle_memory("floor", load, |_| baselines::floor(server, false)).await);
        }
        Command::Floor { server, post, load, .. } => {
            let scenario = if post { "send" } else { "round-trip" };
            report("floor", scenario, load, run::run(load, |_| baselines::floor(server, post)).await);
        }
        Command::Websocket { target, load } => {
            report("websocket", "round-trip", load, run::run(load, |_| baselines::websocket(target.clone())).await);
        }
    }
    Ok(())
}
