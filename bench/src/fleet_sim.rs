//! The control plane at fleet sizes this machine cannot host: N simulated
//! daemons register in a real Redis and do there what a daemon does
//! (heartbeat, reporting what they hold when asked; take create hand-offs
//! from their own inbox with a blocking pop and answer them; release a
//! socket's slot when it closes), without opening any upstream, while
//! clients create sockets through a real router. Reports creates/s, create
//! latency, and Redis' CPU time (`INFO cpu`) per create and per second of
//! the idle fleet, so a reader sees both what a create costs Redis and what
//! the fleet's size alone costs it.

use crate::polysocket::{Creating, creator};
use crate::run::{self, Load};
use polysocket_common::cli::parse_duration;
use polysocket_common::fleet::{DaemonInfo, Fleet, FleetError, Heartbeat, Inbox, RedisFleet};
use polysocket_common::wire::{EstablishReply, EstablishRequest};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, clap::Args)]
pub struct FleetSim {
    /// The router's Redis, with room for a connection per simulated daemon
    /// (`--maxclients`).
    #[arg(long)]
    redis: String,
    /// Simulated daemons.
    #[arg(long)]
    daemons: usize,
    /// How often each simulated daemon renews its entry (the daemon's default).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    heartbeat_interval: Duration,
    /// How long a simulated socket stays open before it closes and frees its slot.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    socket_life: Duration,
    /// Sockets each simulated daemon may hold.
    #[arg(long, default_value_t = 10_000)]
    capacity: u32,
    /// How long the idle fleet's Redis CPU is measured before the creates.
    #[arg(long, default_value_t = 5)]
    idle_seconds: u64,
    #[command(flatten)]
    creating: Creating,
    /// `--sockets` clients create sockets one after another; `--pid` is the router's.
    #[command(flatten)]
    load: Load,
}

/// What a simulated daemon shares with the tasks answering its creates.
struct Simulated {
    info: DaemonInfo,
    /// Sockets held per token, reported when the fleet rebuilds the entry.
    held: Mutex<HashMap<String, u32>>,
}

impl Simulated {
    fn holdings(&self) -> Vec<(String, u32)> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(t, n)| (t.clone(), *n)).collect()
    }

    fn count(&self, token: &str, change: i64) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.entry(token.to_owned()).or_default();
        *count = (i64::from(*count) + change).max(0) as u32;
        if *count == 0 {
            held.remove(token);
        }
    }
}

pub async fn run(args: FleetSim) -> Result<Value, String> {
    fn failed(what: &'static str) -> impl Fn(FleetError) -> String {
        move |e| format!("{what}: {e}")
    }
    // Commands (heartbeats, replies, releases) share one pool, as a
    // daemon's own commands do; each daemon's blocking pop has its own
    // connection, as it would in a real fleet.
    let shared = RedisFleet::new(&args.redis).map_err(failed("redis"))?;
    let mut daemons = Vec::with_capacity(args.daemons);
    let mut first_interval = args.heartbeat_interval;
    for n in 0..args.daemons {
        // The load's clients only read the fqdn's port; 9 is never dialled.
        let fqdn = format!("d{n}.sim.invalid:9");
        let info = DaemonInfo { id: format!("sim{n}"), fqdn, capacity: args.capacity };
        let daemon = Arc::new(Simulated { info, held: Mutex::default() });
        first_interval = register(&shared, &daemon, args.heartbeat_interval, args.heartbeat_interval, false)
            .await
            .map_err(failed("registering"))?;
        daemons.push(daemon);
    }
    for (n, daemon) in daemons.iter().enumerate() {
        // Spread over one interval, as daemons that started at different times.
        let phase = first_interval.mul_f64(n as f64 / args.daemons as f64);
        tokio::spawn(heartbeats(shared.clone(), daemon.clone(), args.heartbeat_interval, phase));
        let inbox = shared.inbox(&daemon.info.id);
        tokio::spawn(take_creates(shared.clone(), inbox, daemon.clone(), args.socket_life, phase));
    }
    let mut admin =
        redis::Client::open(args.redis.as_str()).and_then(|c| c.get_connection()).map_err(|e| format!("redis: {e}"))?;
    // Once every daemon has beaten at its own phase and has its inbox open.
    tokio::time::sleep(first_interval * 2).await;
    let idle_began = (Instant::now(), redis_cpu_seconds(&mut admin)?);
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let idle_cpu_per_second = (redis_cpu_seconds(&mut admin)? - idle_began.1) / idle_began.0.elapsed().as_secs_f64();
    let creates_began = redis_cpu_seconds(&mut admin)?;
    let creating = args.creating.clone();
    let outcome = run::run(args.load, |n| creator(n, creating.clone())).await;
    let creates_cpu = redis_cpu_seconds(&mut admin)? - creates_began;
    let mut line = run::summary("polysocket", "fleet-sim", args.load, outcome);
    let (creates, seconds) = (line["operations"].as_f64().unwrap_or(0.0), line["seconds"].as_f64().unwrap_or(0.0));
    let per_create = |cpu: f64| (cpu * 1e6 / creates.max(1.0) * 100.0).round() / 100.0;
    line["daemons"] = json!(args.daemons);
    line["heartbeat_interval_ms"] = json!(first_interval.as_millis() as u64);
    line["redis_cpu_us_per_create"] = json!(per_create(creates_cpu));
    // What the creates added to what the idle fleet costs anyway.
    line["redis_cpu_us_per_create_beyond_idle"] = json!(per_create(creates_cpu - idle_cpu_per_second * seconds));
    // What the registry, the counts and a connection per daemon take.
    line["redis_used_memory_mib"] =
        json!((info_field(&mut admin, "memory", "used_memory")? / 1048576.0 * 10.0).round() / 10.0);
    line["idle_redis_cpu_ms_per_second"] = json!((idle_cpu_per_second * 1e5).round() / 100.0);
    Ok(line)
}

/// One heartbeat, with the daemon's holdings for when its entry is rebuilt;
/// answers when the next is due.
async fn register(
    fleet: &RedisFleet,
    daemon: &Simulated,
    min_interval: Duration,
    interval: Duration,
    registered_before: bool,
) -> Result<Duration, FleetError> {
    let holdings = || daemon.holdings();
    let beat = Heartbeat {
        daemon: &daemon.info,
        min_interval,
        interval,
        registered_before,
        holdings: &holdings,
        reconcile: false,
    };
    Ok(fleet.heartbeat(&beat).await?.next_in)
}

/// Beats as the daemon does: as often as the fleet asks.
async fn heartbeats(fleet: Arc<RedisFleet>, daemon: Arc<Simulated>, min_interval: Duration, first_in: Duration) {
    let mut interval = first_in;
    loop {
        tokio::time::sleep(interval).await;
        interval = register(&fleet, &daemon, min_interval, interval, true).await.unwrap_or_else(|e| {
            eprintln!("{}: heartbeat failed: {e:?}", daemon.info.id);
            min_interval
        });
    }
}

async fn take_creates(
    fleet: Arc<RedisFleet>,
    mut inbox: Box<dyn Inbox>,
    daemon: Arc<Simulated>,
    socket_life: Duration,
    first_in: Duration,
) {
    // Spread, so that ten thousand connections do not open at once.
    tokio::time::sleep(first_in).await;
    loop {
        match inbox.next_request().await {
            Ok(Some(request)) => drop(tokio::spawn(hold(fleet.clone(), daemon.clone(), request, socket_life))),
            Ok(None) => {}
            Err(e) => {
                eprintln!("{}: taking creates failed: {e:?}", daemon.info.id);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Answers a create as a daemon whose upstream opens at once (with the
/// outcome alone, no acceptance first), holds the socket for its life, then
/// frees its slot.
async fn hold(fleet: Arc<RedisFleet>, daemon: Arc<Simulated>, request: EstablishRequest, life: Duration) {
    let request_id = request.id.clone();
    daemon.count(&request.token, 1);
    let socket = uuid::Uuid::new_v4().simple().to_string();
    let open = EstablishReply::Open { request_id, fqdn: daemon.info.fqdn.clone(), socket, protocol: String::new() };
    let _ = fleet.reply(&request, open).await;
    tokio::time::sleep(life).await;
    daemon.count(&request.token, -1);
    if let Err(e) = fleet.release(&request.token, &daemon.info.id).await {
        eprintln!("{}: release failed: {e}", daemon.info.id);
    }
}

/// Redis' CPU time so far, user and system, all its threads.
fn redis_cpu_seconds(admin: &mut redis::Connection) -> Result<f64, String> {
    Ok(info_field(admin, "cpu", "used_cpu_user")? + info_field(admin, "cpu", "used_cpu_sys")?)
}

/// One figure of `INFO section`.
fn info_field(admin: &mut redis::Connection, section: &str, name: &str) -> Result<f64, String> {
    let info: String = redis::cmd("INFO").arg(section).query(admin).map_err(|e| format!("INFO {section}: {e}"))?;
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':')?.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("no {name} in INFO {section}"))
}
