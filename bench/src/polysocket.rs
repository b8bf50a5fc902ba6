//! polysocket's side: `/create`, then `POST /s` and long-poll `/j` with `ack`.

use crate::run::{Client, Connection, IDLE_SETTLE_SECS, Operation, resident_kib};
use futures_util::StreamExt;
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;

/// Where sockets are created, and for which upstream.
#[derive(clap::Args, Clone)]
pub struct Creating {
    /// Where /create is served (a router, or polysocketd --standalone).
    #[arg(long)]
    pub router: SocketAddr,
    /// The upstream WebSocket server.
    #[arg(long)]
    pub target: String,
    #[arg(long, default_value = "dev")]
    pub token: String,
}

/// A socket as `/create` answered it.
pub struct Created {
    pub daemon: SocketAddr,
    pub host: String,
    pub id: String,
}

impl Creating {
    pub async fn connect(&self) -> Result<Connection, String> {
        Connection::open(self.router, &self.router.to_string()).await
    }

    /// Creates one socket over a connection to the router.
    pub async fn create(&self, router: &mut Connection) -> Result<Created, String> {
        let query = [("from", "loadgen"), ("target", self.target.as_str()), ("token", self.token.as_str())];
        let path = format!("/create?{}", serde_urlencoded::to_string(query).expect("strings encode"));
        let created = parse(&router.get("create", &path).await?.expect("create", 200)?)?;
        if created["ok"] != true {
            return Err(format!("create failed: {created}"));
        }
        let host = created["fqdn"].as_str().unwrap_or_default().to_owned();
        let port = host.rsplit(':').next().and_then(|p| p.parse().ok()).ok_or("fqdn without a port")?;
        // The fqdn names a host under the daemon's domain; on loopback every
        // daemon is 127.0.0.1 and the port tells them apart.
        let daemon = SocketAddr::new(self.router.ip(), port);
        Ok(Created { daemon, host, id: created["socket"].as_str().unwrap_or_default().to_owned() })
    }
}

fn parse(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("{e}: {text}"))
}

/// A client doing round trips (or, with `send_only`, sends alone) over one
/// connection to its socket's daemon.
pub struct Bridged {
    daemon: Connection,
    id: String,
    send_only: bool,
    seq: u64,
    acked: u64,
}

pub async fn bridged(creating: &Creating, send_only: bool) -> Result<Client, String> {
    let Created { daemon, host, id } = creating.create(&mut creating.connect().await?).await?;
    let daemon = Connection::open(daemon, &host).await?;
    Ok(Box::new(Bridged { daemon, id, send_only, seq: 0, acked: 0 }))
}

impl Bridged {
    async fn send(&mut self) -> Result<(), String> {
        self.seq += 1;
        let path = format!("/s/{}?seq={}", self.id, self.seq);
        self.daemon.post("send", &path, "text/plain", format!("m{}", self.seq)).await?.expect("send", 201).map(drop)
    }

    /// Long-polls until the echo of the last send has been received.
    async fn receive_echo(&mut self) -> Result<(), String> {
        let expected = format!("m{}", self.seq);
        loop {
            let path = format!("/j/{}?ttl=5000&ack={}", self.id, self.acked);
            let answer = parse(&self.daemon.get("poll", &path).await?.expect("poll", 200)?)?;
            for message in answer["messages"].as_array().into_iter().flatten() {
                self.acked = self.acked.max(message["seq"].as_u64().unwrap_or(0));
                if message["data"] == expected.as_str() {
                    return Ok(());
                }
            }
        }
    }
}

impl Operation for Bridged {
    fn run(&mut self) -> Pin<Box<dyn Future<Output = Result<(), String>> + '_>> {
        Box::pin(async move {
            self.send().await?;
            if self.send_only { Ok(()) } else { self.receive_echo().await }
        })
    }

    fn wait(&mut self) -> Pin<Box<dyn Future<Output = Result<(), String>> + '_>> {
        Box::pin(async move {
            let path = format!("/j/{}?ttl=25000&ack={}", self.id, self.acked);
            self.daemon.get("poll", &path).await?.expect("poll", 200).map(drop)
        })
    }

    fn finish(&mut self) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        Box::pin(async move {
            let _ = self.daemon.get("close", &format!("/s/{}?t=c", self.id)).await;
        })
    }
}

/// A client whose operation is creating a socket (left open: it idles out).
/// Each has its own address in 10.0.0.0/8 (X-Forwarded-For, from a proxy
/// the router trusts): RFC 6455 lets a daemon have one handshake at a time
/// per client and upstream address, and real creates come from many clients.
pub struct Creator {
    router: Connection,
    creating: Creating,
}

pub async fn creator(n: usize, creating: Creating) -> Result<Client, String> {
    let address = Ipv4Addr::from(0x0a00_0000 | (n as u32 & 0x00ff_ffff));
    let router = creating.connect().await?.forwarding_for(address);
    Ok(Box::new(Creator { router, creating }))
}

impl Operation for Creator {
    fn run(&mut self) -> Pin<Box<dyn Future<Output = Result<(), String>> + '_>> {
        Box::pin(async move { self.creating.create(&mut self.router).await.map(drop) })
    }
}

/// Creates `sockets` sockets, has each carry a message both ways (send, then
/// poll until its echo arrives and acknowledge it), lets them go idle, and
/// reports how much the daemon's resident memory grew per socket. Creates
/// and traffic go over a few connections so that the figure is the sockets'
/// cost, not that of HTTP connections. Needs a standalone daemon (its
/// sockets are served where it answers /create).
pub async fn idle_memory(creating: &Creating, sockets: usize, daemon_pid: u32) -> Result<Value, String> {
    const CONNECTIONS: usize = 64;
    let mut connections = Vec::new();
    for _ in 0..CONNECTIONS {
        connections.push(creating.connect().await?);
    }
    // One socket first, so the baseline holds what the first create and the
    // first round trip warm up once (the upstream client, the HTTP workers'
    // buffers).
    let first = creating.create(&mut connections[0]).await?;
    round_trip_once(&mut connections[0], &first.id).await?;
    let before = resident_kib(daemon_pid)?;
    let created: usize = futures_util::stream::iter(connections.iter_mut().enumerate())
        .map(|(i, router)| async move {
            // `sockets` in all: the first connections take one more each.
            let share = sockets / CONNECTIONS + usize::from(i < sockets % CONNECTIONS);
            let mut ready = 0;
            for _ in 0..share {
                let Ok(socket) = creating.create(router).await else { continue };
                if socket.daemon != creating.router {
                    return Err("idle-memory needs a standalone daemon (--router is the daemon)".to_owned());
                }
                round_trip_once(router, &socket.id).await?;
                ready += 1;
            }
            Ok(ready)
        })
        .buffer_unordered(CONNECTIONS)
        .collect::<Vec<Result<usize, String>>>()
        .await
        .into_iter()
        .sum::<Result<usize, String>>()?;
    // Let the last transient buffers go (and the allocator return freed
    // pages) before reading.
    tokio::time::sleep(std::time::Duration::from_secs(IDLE_SETTLE_SECS)).await;
    let after = resident_kib(daemon_pid)?;
    if created < sockets {
        return Err(format!("only {created} of {sockets} sockets were created and carried a message"));
    }
    Ok(serde_json::json!({
        "system": "polysocket",
        "scenario": "idle-memory",
        "sockets": created,
        "after_traffic": true,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_socket": (after.saturating_sub(before)) as f64 / created as f64,
    }))
}

/// One message to the upstream echo and back, acknowledged, on `daemon`.
async fn round_trip_once(daemon: &mut Connection, id: &str) -> Result<(), String> {
    daemon.post("send", &format!("/s/{id}?seq=1"), "text/plain", "idle".to_owned()).await?.expect("send", 201)?;
    let mut acked = 0;
    loop {
        let answer = parse(&daemon.get("poll", &format!("/j/{id}?ttl=5000&ack={acked}")).await?.expect("poll", 200)?)?;
        for message in answer["messages"].as_array().into_iter().flatten() {
            acked = acked.max(message["seq"].as_u64().unwrap_or(0));
            if message["data"] == "idle" {
                // Acknowledge it, so the socket holds nothing for its client.
                daemon.get("ack", &format!("/j/{id}?ttl=0&ack={acked}")).await?.expect("ack", 200)?;
                return Ok(());
            }
        }
    }
}
