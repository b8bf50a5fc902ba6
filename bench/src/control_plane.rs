//! What a create costs Redis as the fleet grows: registers N daemons in a
//! dedicated Redis (as many heartbeats would), then reserves slots through
//! the real `RedisFleet`, the same script every create runs, and reads
//! Redis' own accounting of the CPU those calls took (`INFO commandstats`).
//! The per-message path never touches Redis, so this is the fleet's only
//! per-create Redis work besides the hand-off itself.

use polysocket_common::fleet::{DaemonInfo, Fleet, Heartbeat, RedisFleet};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct ReserveCost {
    /// A Redis of its own: it is emptied first.
    #[arg(long)]
    redis: String,
    #[arg(long)]
    daemons: usize,
    #[arg(long, default_value_t = 20_000)]
    reserves: usize,
    /// Reserves in flight at once.
    #[arg(long, default_value_t = 8)]
    clients: usize,
}

pub async fn run(args: &ReserveCost) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let mut admin = redis::Client::open(args.redis.as_str())?.get_multiplexed_async_connection().await?;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut admin).await?;
    let fleet = RedisFleet::new(&args.redis)?;
    let no_holdings = Vec::new;
    for n in 0..args.daemons {
        let daemon = DaemonInfo { id: format!("sim{n}"), fqdn: format!("d{n}.sim"), capacity: 1_000_000 };
        let beat = Heartbeat {
            daemon: &daemon,
            ttl: Duration::from_secs(3600),
            registered_before: false,
            holdings: &no_holdings,
        };
        fleet.heartbeat(&beat).await?;
    }
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut admin).await?;
    let started = Instant::now();
    let per_client = args.reserves / args.clients;
    let clients = (0..args.clients).map(|_| async {
        for _ in 0..per_client {
            fleet.reserve("sim", u32::MAX).await.expect("reserve");
        }
    });
    futures_util::future::join_all(clients).await;
    let elapsed = started.elapsed();
    let stats: String = redis::cmd("INFO").arg("commandstats").query_async(&mut admin).await?;
    let (calls, usec) = evalsha_stats(&stats).ok_or("no EVALSHA in INFO commandstats")?;
    Ok(serde_json::json!({
        "scenario": "reserve-cost",
        "daemons": args.daemons,
        "reserves": calls,
        "reserves_per_second": (calls as f64 / elapsed.as_secs_f64()).round(),
        "redis_usec_per_reserve": (usec as f64 / calls as f64 * 100.0).round() / 100.0,
    }))
}

/// `calls` and `usec` of `cmdstat_evalsha` (the script runs as EVALSHA).
fn evalsha_stats(info: &str) -> Option<(u64, u64)> {
    let line = info.lines().find(|line| line.starts_with("cmdstat_evalsha:"))?;
    let field = |name: &str| line.split([':', ',']).find_map(|kv| kv.strip_prefix(name)?.parse().ok());
    Some((field("calls=")?, field("usec=")?))
}
