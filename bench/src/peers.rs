//! The peers' polling protocols, as their browser clients speak them.
//!
//! - SockJS (sockjs-protocol 0.3): a session is `/<prefix>/<server>/<session>/`;
//!   `xhr` polls and `xhr_send` sends a JSON array of strings; `jsonp` and
//!   `jsonp_send` do the same with a callback and a form field. Frames: `o`
//!   open, `h` heartbeat, `a[...]` messages, `c[code,reason]` close.
//! - Engine.IO 4 polling: `GET /engine.io/?EIO=4&transport=polling` opens
//!   (`0{"sid":...}`), then GET polls and POST sends on `&sid=`. Packets are
//!   joined by 0x1e: `4` message, `2` ping (answered with `3`), `6` noop,
//!   `1` close.

use crate::run::{Client, Connection, Operation};
use serde_json::Value;
use std::net::SocketAddr;
use std::pin::Pin;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum SockjsTransport {
    Xhr,
    Jsonp,
}

pub struct Sockjs {
    gateway: Connection,
    session: String,
    transport: SockjsTransport,
    n: u64,
}

pub async fn sockjs(n: usize, gateway: SocketAddr, transport: SockjsTransport) -> Result<Client, String> {
    let session = format!("/sockjs/{:03}/{}", n % 1000, uuid::Uuid::new_v4().simple());
    let mut client =
        Sockjs { gateway: Connection::open(gateway, &gateway.to_string()).await?, session, transport, n: 0 };
    match client.poll().await?.as_str() {
        "o" => Ok(Box::new(client)),
        other => Err(format!("sockjs: expected an open frame, got {other:?}")),
    }
}

impl Sockjs {
    /// One receive request; answers the frame.
    async fn poll(&mut self) -> Result<String, String> {
        let frame = match self.transport {
            SockjsTransport::Xhr => self
                .gateway
                .post("xhr", &format!("{}/xhr", self.session), "text/plain", String::new())
                .await?
                .expect("xhr", 200)?,
            SockjsTransport::Jsonp => {
                let script =
                    self.gateway.get("jsonp", &format!("{}/jsonp?c=cb", self.session)).await?.expect("jsonp", 200)?;
                let argument = script.trim_end().strip_prefix("/**/cb(").and_then(|s| s.strip_suffix(");"));
                serde_json::from_str(argument.ok_or_else(|| format!("jsonp: not a callback: {script:?}"))?)
                    .map_err(|e| format!("jsonp: {e}"))?
            }
        };
        Ok(frame.trim_end().to_owned())
    }

    async fn send(&mut self, message: &str) -> Result<(), String> {
        let messages = serde_json::to_string(&[message]).expect("strings encode");
        let (what, content_type, body, expected) = match self.transport {
            SockjsTransport::Xhr => ("xhr_send", "text/plain", messages, 204),
            SockjsTransport::Jsonp => {
                let form = serde_urlencoded::to_string([("d", messages)]).expect("strings encode");
                ("jsonp_send", "application/x-www-form-urlencoded", form, 200)
            }
        };
        let path = format!("{}/{what}", self.session);
        self.gateway.post(what, &path, content_type, body).await?.expect(what, expected).map(drop)
    }
}

impl Operation for Sockjs {
    fn run(&mut self) -> Pin<Box<dyn Future<Output = Result<(), String>> + '_>> {
        Box::pin(async move {
            self.n += 1;
            let message = format!("m{}", self.n);
            self.send(&message).await?;
            loop {
                let frame = self.poll().await?;
                if let Some(messages) = frame.strip_prefix('a') {
                    let messages: Vec<String> = serde_json::from_str(messages).map_err(|e| format!("{e}: {frame}"))?;
                    if messages.contains(&message) {
                        return Ok(());
                    }
                } else if frame != "h" {
                    return Err(format!("sockjs: unexpected frame {frame:?}"));
                }
            }
        })
    }

    fn wait(&mut self) -> Pin<Box<dyn Future<Output = Result<(), String>> + '_>> {
        Box::pin(async move { self.poll().await.map(drop) })
    }
}

pub struct EngineIo {
    gateway: Connection,
    session: String,
    n: u64,
}

pub async fn engine_io(gateway: SocketAddr) -> Result<Client, String> {
    let mut connection = Connection::open(gateway, &gateway.to_string()).await?;
    let path = "/engine.io/?EIO=4&transport=polling";
    let handshake = connection.get("engine.io open", path).await?.expect("engine.io open", 200)?;
    let open: Value = handshake
        .strip_prefix('0')
        .and_then(|json| serde_json::from_str(json).ok())
        .ok_or_else(|| format!("engine.io: not an open packet: {handshake:?}"))?;
    let sid = open["sid"].as_str().ok_or("engine.io: no sid")?;
    Ok(Box::new(EngineIo { gateway: connection, session: format!("{path}&sid={sid}"), n: 0 }))
}

impl EngineIo {
    async fn post(&mut self, packet: String) -> Result<(), String> {
        let sent = self.gateway.post("engine.io send", &self.session, "text/plain;charset=UTF-8", packet).await?;
        sent.expect("engine.io send", 200).map(drop)
    }
}

impl Operation for EngineIo {
    fn run(&mut self) -> Pin<Box<dyn Future<Output = Result<(), String>> + '_>> {
        Box::pin(async move {
            self.n += 1;
            let message = format!("m{}", self.n);
            self.post(format!("4{message}")).await?;
            loop {
                let session = self.session.clone();
                let payload = self.gateway.get("engine.io poll", &session).await?.expect("engine.io poll", 200)?;
                let mut echoed = false;
                for packet in payload.split('\u{1e}') {
                    match packet.split_at_checked(1) {
                        Some(("4", data)) => echoed |= data == message,
                        Some(("2", _)) => self.post("3".into()).await?,
                        Some(("6", _)) => {}
                        _ => return Err(format!("engine.io: unexpected packet {packet:?}")),
                    }
                }
                if echoed {
                    return Ok(());
                }
            }
        })
    }

    fn wait(&mut self) -> Pin<Box<dyn Future<Output = Result<(), String>> + '_>> {
        Box::pin(async move {
            let session = self.session.clone();
            self.gateway.get("engine.io poll", &session).await?.expect("engine.io poll", 200).map(drop)
        })
    }

    fn finish(&mut self) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        Box::pin(async move {
            let _ = self.post("1".into()).await;
        })
    }
}
