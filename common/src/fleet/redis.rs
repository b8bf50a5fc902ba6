//! The production fleet, coordinated through one Redis.
//!
//! Keys (all under `ps:`):
//! - `ps:tokens` hash: token -> JSON [`TokenRecord`], and `ps:tokens:stored`
//!   telling that tokens were stored (gone when Redis lost its data);
//! - `ps:daemons` set of daemon ids, and `ps:daemon:<id>` hash (`fqdn`,
//!   `capacity`, `load`) that expires unless heartbeats renew it;
//! - `ps:slots:<token>` hash: daemon id -> sockets that token holds there, so
//!   the slots of a daemon that died go away with its registry entry;
//! - `ps:inbox:<id>` list: create requests for a daemon (at-least-once until
//!   popped), answered by `PUBLISH` on the router's own reply channel;
//! - `ps:suspect:<id>`: set for a while when a daemon left a create unanswered.

use super::{DaemonInfo, Fleet, FleetError, Reservation};
use crate::logging::Outage;
use crate::token::TokenRecord;
use crate::wire::{EstablishReply, EstablishRequest, unix_millis};
use async_trait::async_trait;
use deadpool_redis::{Pool, Runtime};
use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

const TOKENS_KEY: &str = "ps:tokens";
/// Where revocations that close sockets are announced to the daemons.
const REVOCATIONS_CHANNEL: &str = "ps:revocations";
/// Set whenever tokens are stored: its absence means Redis lost its data.
const TOKENS_STORED_KEY: &str = "ps:tokens:stored";
const DAEMONS_KEY: &str = "ps:daemons";
/// How long a daemon's blocking pop waits before it re-checks for shutdown.
const INBOX_WAIT_SECS: f64 = 1.0;
/// Bounds every Redis round trip, so an unreachable Redis turns into an error
/// within about a second instead of a hang.
const REDIS_TIMEOUT: Duration = Duration::from_millis(1000);
/// Pause between attempts to re-establish the reply subscription.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(250);

fn daemon_key(id: &str) -> String {
    format!("ps:daemon:{id}")
}

fn slots_key(token: &str) -> String {
    format!("ps:slots:{token}")
}

fn inbox_key(id: &str) -> String {
    format!("ps:inbox:{id}")
}

/// Checks the token's live slots and claims one on the least-loaded daemon
/// (by load/capacity, then absolute load) in one atomic step, so concurrent
/// creates from many routers neither overshoot a limit nor pile onto one daemon.
const RESERVE_SCRIPT: &str = r#"
local max = tonumber(ARGV[1])
local held = redis.call('HGETALL', KEYS[2])
local total = 0
for i = 1, #held, 2 do
  if redis.call('EXISTS', 'ps:daemon:' .. held[i]) == 1 then
    total = total + tonumber(held[i + 1])
  else
    redis.call('HDEL', KEYS[2], held[i])
  end
end
if total >= max then return {'limit'} end
local best, best_load, best_cap
local live = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local v = redis.call('HMGET', 'ps:daemon:' .. id, 'capacity', 'load')
  if v[1] and redis.call('EXISTS', 'ps:suspect:' .. id) == 0 then
    live = live + 1
    local cap, load = tonumber(v[1]), tonumber(v[2] or '0')
    if load < cap and (not best or load * best_cap < best_load * cap
        or (load * best_cap == best_load * cap and load < best_load)) then
      best, best_load, best_cap = id, load, cap
    end
  elseif not v[1] then
    redis.call('SREM', KEYS[1], id)
  end
end
if live == 0 then return {'nodaemon'} end
if not best then return {'nocapacity'} end
redis.call('HINCRBY', 'ps:daemon:' .. best, 'load', 1)
redis.call('HINCRBY', KEYS[2], best, 1)
return {'ok', best}
"#;

const RELEASE_SCRIPT: &str = r#"
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
if redis.call('EXISTS', KEYS[2]) == 1 and redis.call('HINCRBY', KEYS[2], 'load', -1) < 0 then
  redis.call('HSET', KEYS[2], 'load', 0)
end
"#;

/// `load` is only written when the entry is new, so a heartbeat never undoes
/// reservations made since the daemon last counted its sockets.
const HEARTBEAT_SCRIPT: &str = r#"
redis.call('HSET', KEYS[2], 'fqdn', ARGV[1], 'capacity', ARGV[2])
local created = redis.call('HSETNX', KEYS[2], 'load', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('SADD', KEYS[1], ARGV[5])
return created
"#;

pub struct RedisFleet {
    client: redis::Client,
    pool: Pool,
    reserve: redis::Script,
    release: redis::Script,
    heartbeat: redis::Script,
    /// This process's channel for establish replies.
    reply_channel: String,
    /// Creates waiting for a daemon's replies, by request id.
    waiting: Arc<Mutex<Waiting>>,
    /// Whether the reply subscription is live; without it a reply would be
    /// published to nobody, so creates fail fast instead of timing out.
    subscribed: Arc<AtomicBool>,
    /// The daemon's connection for blocking pops: its own, without a response
    /// timeout, so a pop never stalls other commands.
    inbox: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// Woken when a lookup finds Redis has lost every token record, so they
    /// are stored again at once rather than at the next periodic check.
    tokens_lost: tokio::sync::Notify,
}

impl RedisFleet {
    /// Connects lazily: the fleet is usable (and reports errors) while Redis
    /// is down, and recovers by itself when it returns.
    pub fn new(url: &str) -> Result<Arc<Self>, FleetError> {
        let client = redis::Client::open(url)?;
        let mut pool_config = deadpool_redis::Config::from_url(url);
        pool_config.pool = Some(deadpool_redis::PoolConfig {
            max_size: 32,
            timeouts: deadpool_redis::Timeouts {
                wait: Some(REDIS_TIMEOUT),
                create: Some(REDIS_TIMEOUT),
                recycle: Some(REDIS_TIMEOUT),
            },
            ..Default::default()
        });
        let pool = pool_config.create_pool(Some(Runtime::Tokio1)).map_err(|e| FleetError::Unavailable(Box::new(e)))?;
        let fleet = Arc::new(RedisFleet {
            client,
            pool,
            reserve: redis::Script::new(RESERVE_SCRIPT),
            release: redis::Script::new(RELEASE_SCRIPT),
            heartbeat: redis::Script::new(HEARTBEAT_SCRIPT),
            reply_channel: format!("ps:replies:{}", uuid::Uuid::new_v4().simple()),
            waiting: Arc::default(),
            subscribed: Arc::default(),
            inbox: tokio::sync::Mutex::new(None),
            tokens_lost: tokio::sync::Notify::new(),
        });
        Ok(fleet)
    }

    /// Starts listening for establish replies (routers call this once) and
    /// waits up to about a second for the subscription, so the first creates
    /// do not fail while it comes up. Listening goes on for the life of the
    /// process, resubscribing after Redis failures.
    pub async fn listen_for_replies(&self) {
        let waiting = self.waiting.clone();
        let deliver = move |payload: &[u8]| {
            let reply: EstablishReply = match serde_json::from_slice(payload) {
                Ok(reply) => reply,
                Err(e) => return log::warn!("ignoring malformed establish reply: {e}"),
            };
            let waiter = waiting.lock().unwrap_or_else(|e| e.into_inner()).get(reply.request_id()).cloned();
            if let Some(waiter) = waiter {
                let _ = waiter.try_send(reply);
            }
        };
        self.subscribe(self.reply_channel.clone(), self.subscribed.clone(), deliver);
        let deadline = tokio::time::Instant::now() + REDIS_TIMEOUT;
        while !self.subscribed.load(Ordering::Acquire) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Keeps a subscription to `channel` alive for the life of the process,
    /// handing every message to `on_message`; `subscribed` tells whether it
    /// is live right now.
    fn subscribe(
        &self,
        channel: String,
        subscribed: Arc<AtomicBool>,
        on_message: impl Fn(&[u8]) + Send + Sync + 'static,
    ) {
        let client = self.client.clone();
        tokio::spawn(async move {
            let mut outage = Outage::new(format!("subscription to {channel}"));
            loop {
                if let Err(e) = relay(&client, &channel, &subscribed, &mut outage, &on_message).await {
                    outage.failed(&e);
                }
                subscribed.store(false, Ordering::Release);
                tokio::time::sleep(RESUBSCRIBE_DELAY).await;
            }
        });
    }

    /// Resolves when a token lookup has found the token records gone.
    pub async fn tokens_lost(&self) {
        self.tokens_lost.notified().await
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, FleetError> {
        Ok(self.pool.get().await?)
    }

    async fn inbox_connection(&self) -> Result<MultiplexedConnection, FleetError> {
        let mut slot = self.inbox.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let config =
            redis::AsyncConnectionConfig::new().set_connection_timeout(Some(REDIS_TIMEOUT)).set_response_timeout(None);
        let conn = self.client.get_multiplexed_async_connection_with_config(&config).await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }
}

/// Subscribes to `channel` and hands each reply to the create waiting for it.
type Waiting = HashMap<String, mpsc::Sender<EstablishReply>>;

/// One subscription's life: subscribe, hand over messages until it breaks.
async fn relay(
    client: &redis::Client,
    channel: &str,
    subscribed: &AtomicBool,
    outage: &mut Outage,
    on_message: &(impl Fn(&[u8]) + Send + Sync),
) -> Result<(), redis::RedisError> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    subscribed.store(true, Ordering::Release);
    outage.ended();
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        on_message(message.get_payload_bytes());
    }
    Err(redis::RedisError::from((redis::ErrorKind::Io, "subscription stream ended")))
}

#[async_trait]
impl Fleet for RedisFleet {
    async fn store_tokens(&self, tokens: &[TokenRecord]) -> Result<(), FleetError> {
        if tokens.is_empty() {
            return Ok(());
        }
        let fields: Vec<(String, String)> = tokens
            .iter()
            .map(|t| (t.token.clone(), serde_json::to_string(t).expect("token records serialize")))
            .collect();
        let _: () = redis::pipe()
            .hset_multiple(TOKENS_KEY, &fields)
            .set(TOKENS_STORED_KEY, 1)
            .query_async(&mut self.conn().await?)
            .await?;
        Ok(())
    }

    async fn restore_tokens(&self, tokens: &[TokenRecord]) -> Result<bool, FleetError> {
        let stored: bool = self.conn().await?.exists(TOKENS_STORED_KEY).await?;
        if stored {
            return Ok(false);
        }
        self.store_tokens(tokens).await?;
        Ok(true)
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, FleetError> {
        let all: HashMap<String, String> = self.conn().await?.hgetall(TOKENS_KEY).await?;
        let mut tokens: Vec<TokenRecord> = all.values().filter_map(|json| serde_json::from_str(json).ok()).collect();
        tokens.sort_by(|a, b| a.token.cmp(&b.token));
        Ok(tokens)
    }

    async fn revoke_token(&self, token: &str, close_sockets: bool) -> Result<bool, FleetError> {
        let mut conn = self.conn().await?;
        let removed: u32 = conn.hdel(TOKENS_KEY, token).await?;
        if close_sockets {
            let _: u64 = conn.publish(REVOCATIONS_CHANNEL, token).await?;
        }
        Ok(removed > 0)
    }

    async fn token(&self, token: &str) -> Result<Option<TokenRecord>, FleetError> {
        let (json, stored): (Option<String>, bool) = redis::pipe()
            .hget(TOKENS_KEY, token)
            .exists(TOKENS_STORED_KEY)
            .query_async(&mut self.conn().await?)
            .await?;
        if json.is_none() && !stored {
            // Redis restarted empty: the token is not unknown, its record is
            // missing until the routers store the tokens file again.
            self.tokens_lost.notify_waiters();
            return Err(FleetError::Unavailable("token records are being restored after a Redis restart".into()));
        }
        json.map(|json| serde_json::from_str(&json).map_err(|e| FleetError::Unavailable(Box::new(e)))).transpose()
    }

    async fn heartbeat(&self, daemon: &DaemonInfo, load: u32, ttl: Duration) -> Result<bool, FleetError> {
        let mut conn = self.conn().await?;
        let created: bool = self
            .heartbeat
            .key(DAEMONS_KEY)
            .key(daemon_key(&daemon.id))
            .arg(&daemon.fqdn)
            .arg(daemon.capacity)
            .arg(load)
            .arg(ttl.as_millis() as u64)
            .arg(&daemon.id)
            .invoke_async(&mut conn)
            .await?;
        Ok(created)
    }

    async fn deregister(&self, daemon_id: &str) -> Result<(), FleetError> {
        let mut conn = self.conn().await?;
        let _: () =
            redis::pipe().srem(DAEMONS_KEY, daemon_id).del(daemon_key(daemon_id)).query_async(&mut conn).await?;
        Ok(())
    }

    async fn reserve(&self, token: &str, max_connections: u32) -> Result<Reservation, FleetError> {
        let mut conn = self.conn().await?;
        let outcome: Vec<String> =
            self.reserve.key(DAEMONS_KEY).key(slots_key(token)).arg(max_connections).invoke_async(&mut conn).await?;
        match outcome.as_slice() {
            [status, daemon_id] if status == "ok" => Ok(Reservation { daemon_id: daemon_id.clone() }),
            [status] if status == "limit" => Err(FleetError::LimitReached),
            [status] if status == "nocapacity" => Err(FleetError::NoCapacity),
            _ => Err(FleetError::NoDaemon),
        }
    }

    async fn release(&self, token: &str, daemon_id: &str) -> Result<(), FleetError> {
        let mut conn = self.conn().await?;
        let _: () = self
            .release
            .key(slots_key(token))
            .key(daemon_key(daemon_id))
            .arg(daemon_id)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn establish(&self, daemon_id: &str, mut request: EstablishRequest) -> Result<EstablishReply, FleetError> {
        if !self.subscribed.load(Ordering::Acquire) {
            return Err(FleetError::Unavailable("reply subscription is not connected".into()));
        }
        request.reply_to = self.reply_channel.clone();
        let (reply_tx, mut replies) = mpsc::channel(super::REPLIES_PER_CREATE);
        let request_id = request.id.clone();
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).insert(request_id.clone(), reply_tx);
        let outcome = async {
            let payload = serde_json::to_string(&request).expect("requests serialize");
            let inbox = inbox_key(daemon_id);
            // The inbox expires with the request, so a dead daemon's inbox
            // does not keep stale requests around.
            let ttl_ms = request.expires_at_ms.saturating_sub(unix_millis()).max(1);
            let mut conn = self.conn().await?;
            let _: () =
                redis::pipe().rpush(&inbox, payload).pexpire(&inbox, ttl_ms as i64).query_async(&mut conn).await?;
            drop(conn);
            super::await_outcome(&mut replies, &request).await
        }
        .await;
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&request_id);
        outcome
    }

    async fn mark_suspect(&self, daemon_id: &str, period: Duration) -> Result<(), FleetError> {
        let millis = period.as_millis().max(1) as u64;
        let _: () = self.conn().await?.pset_ex(format!("ps:suspect:{daemon_id}"), 1, millis).await?;
        Ok(())
    }

    async fn next_request(&self, daemon_id: &str) -> Result<Option<EstablishRequest>, FleetError> {
        let mut conn = self.inbox_connection().await?;
        let popped: Result<Option<(String, String)>, _> = conn.blpop(inbox_key(daemon_id), INBOX_WAIT_SECS).await;
        let popped = match popped {
            Ok(popped) => popped,
            Err(e) => {
                // Drop the broken connection so the next call reconnects.
                *self.inbox.lock().await = None;
                return Err(e.into());
            }
        };
        Ok(popped.and_then(|(_, json)| match serde_json::from_str(&json) {
            Ok(request) => Some(request),
            Err(e) => {
                log::warn!("dropping malformed establish request: {e}");
                None
            }
        }))
    }

    async fn reply(&self, request: &EstablishRequest, reply: EstablishReply) -> Result<bool, FleetError> {
        let payload = serde_json::to_string(&reply).expect("replies serialize");
        let receivers: u64 = self.conn().await?.publish(&request.reply_to, payload).await?;
        Ok(receivers > 0)
    }

    fn watch_revocations(&self, revoked: Box<dyn Fn(String) + Send + Sync>) {
        self.subscribe(REVOCATIONS_CHANNEL.to_owned(), Arc::default(), move |payload: &[u8]| {
            revoked(String::from_utf8_lossy(payload).into_owned())
        });
    }

    async fn ping(&self) -> Result<(), FleetError> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn().await?).await?;
        Ok(())
    }
}
