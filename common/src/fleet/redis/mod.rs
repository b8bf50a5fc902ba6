//! The production fleet, coordinated through one Redis.
//!
//! Every create, release and heartbeat costs O(log N) Redis work in the
//! number of daemons N, whatever the fleet's size: nothing walks the fleet.
//! Keys touched together share the hash tag `{ps}`, as Redis Cluster needs:
//! - `{ps}:tokens` hash: token -> JSON [`TokenRecord`], and
//!   `{ps}:tokens:stored` telling that tokens were stored (gone when Redis
//!   lost its data);
//! - `{ps}:daemon:<id>` hash (`fqdn`, `capacity`, `load`);
//! - `{ps}:pick` sorted set: the daemons routers may choose, scored by
//!   load/capacity, so the least loaded is the first member;
//! - `{ps}:live` sorted set: daemon id -> when its entry expires (unix ms)
//!   unless a heartbeat renews it; an expired daemon leaves `{ps}:pick`;
//! - `{ps}:dead` sorted set: daemon id -> when it counts as dead, long after
//!   it expired; only then are the token slots its sockets held freed, so a
//!   daemon that was only paused comes back to counts that still hold;
//! - `{ps}:used` hash: token -> sockets it holds fleet-wide, and
//!   `{ps}:held:<id>` hash: token -> sockets it holds on that daemon;
//! - `{ps}:suspect:<id>`: set for a while when a daemon left a create
//!   unanswered (it is out of `{ps}:pick` meanwhile);
//! - `{ps}:warm_until`: after Redis lost its data, creates wait until every
//!   live daemon has registered again with what it holds;
//! - `ps:inbox:{<id>}` list: create requests for a daemon (at-least-once
//!   until popped), answered on the router's own reply channel (by sharded
//!   pub/sub in a Redis Cluster, see [`backend::Fanout`]).
//!
//! The URL chooses one server, Sentinels or a Cluster ([`backend`]).

mod backend;

pub use backend::{CLUSTER_SCHEME, SENTINEL_SCHEME};

use super::{Fleet, FleetError, Heartbeat, Inbox, Registration, Renewal, Reservation};
use crate::logging::Outage;
use crate::token::TokenRecord;
use crate::wire::{EstablishReply, EstablishRequest, unix_millis};
use async_trait::async_trait;
use backend::{Backend, Fanout, Link, Patient};
use futures_util::StreamExt;
use redis::AsyncCommands;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

const TOKENS_KEY: &str = "{ps}:tokens";
/// Where revocations that close sockets are announced to the daemons.
const REVOCATIONS_CHANNEL: &str = "ps:revocations";
/// Set whenever tokens are stored: its absence means Redis lost its data.
const TOKENS_STORED_KEY: &str = "{ps}:tokens:stored";
/// A daemon's slots are freed this many entry ttls after it stopped beating:
/// a daemon paused for less (a GC pause, a frozen VM, a partition) keeps its
/// slots counted, so its token limits hold when it comes back.
const DEAD_AFTER_TTLS: u64 = 10;
/// How many heartbeats a second the whole fleet sends at most, so that its
/// daemons renew less often as it grows: 10,000 daemons beat every 10 s.
const MAX_BEATS_PER_SECOND: u64 = 1000;
/// How long a daemon's blocking pop waits before it is issued again. Long,
/// because every idle daemon re-issues it (10,000 daemons at 1 s would cost
/// Redis 10,000 pops a second for nothing); a draining daemon stops popping
/// by ending the task, not by waiting for the pop.
const INBOX_WAIT_SECS: f64 = 15.0;
/// Every script names this key, though it touches it no more than any other
/// `{ps}` key: Redis Cluster runs a script on the node holding its keys'
/// slot, and every key a script touches shares that slot.
const SCRIPT_KEY: &str = "{ps}";
/// Bounds every Redis round trip, so an unreachable Redis turns into an error
/// within about a second instead of a hang.
const REDIS_TIMEOUT: Duration = Duration::from_millis(1000);
/// Pause between attempts to re-establish the reply subscription.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(250);

fn inbox_key(id: &str) -> String {
    format!("ps:inbox:{{{id}}}")
}

/// What every script starts with: Redis' own clock (so the hosts' clocks
/// never need to agree), and freeing the slots of at most one dead daemon, a
/// bounded share of the clean-up costing O(log N + the tokens it held).
const PRELUDE: &str = r#"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local function reap()
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', '{ps}:dead', '-inf', '(' .. now, 'LIMIT', 0, 1)) do
    local held = redis.call('HGETALL', '{ps}:held:' .. id)
    for i = 1, #held, 2 do
      if redis.call('HINCRBY', '{ps}:used', held[i], -tonumber(held[i + 1])) <= 0 then
        redis.call('HDEL', '{ps}:used', held[i])
      end
    end
    redis.call('DEL', '{ps}:held:' .. id, '{ps}:daemon:' .. id)
    redis.call('ZREM', '{ps}:live', id)
    redis.call('ZREM', '{ps}:dead', id)
    redis.call('ZREM', '{ps}:pick', id)
  end
end
"#;

/// Checks the token's fleet-wide count and claims a slot on the least-loaded
/// live daemon in one atomic step, so concurrent creates from many routers
/// neither overshoot a limit nor pile onto one daemon. ARGV: token, max.
const RESERVE_SCRIPT: &str = r#"
local token, max = ARGV[1], tonumber(ARGV[2])
reap()
if now < tonumber(redis.call('GET', '{ps}:warm_until') or '0') then return {'warming'} end
local used = tonumber(redis.call('HGET', '{ps}:used', token) or '0')
if used >= max then return {'limit'} end
-- Expired daemons met at the head leave the pick set: a bounded number per call.
for _ = 1, 16 do
  local head = redis.call('ZRANGE', '{ps}:pick', 0, 0, 'WITHSCORES')
  if #head == 0 then return {'nodaemon'} end
  local id, share = head[1], tonumber(head[2])
  if tonumber(redis.call('ZSCORE', '{ps}:live', id) or '0') < now then
    redis.call('ZREM', '{ps}:pick', id)
  elseif share >= 1 then
    return {'nocapacity'}
  else
    local daemon = '{ps}:daemon:' .. id
    local load = redis.call('HINCRBY', daemon, 'load', 1)
    redis.call('ZADD', '{ps}:pick', load / tonumber(redis.call('HGET', daemon, 'capacity')), id)
    redis.call('HINCRBY', '{ps}:held:' .. id, token, 1)
    return {'ok', id, tostring(redis.call('HINCRBY', '{ps}:used', token, 1)), tostring(now)}
  end
end
return {'nodaemon'}
"#;

/// Gives back a slot, if that daemon still holds one for the token: a late
/// release (after its daemon was reaped) must not make counts drift.
/// ARGV: token, daemon id.
const RELEASE_SCRIPT: &str = r#"
local token, id = ARGV[1], ARGV[2]
local held = '{ps}:held:' .. id
if tonumber(redis.call('HGET', held, token) or '0') <= 0 then return 0 end
if redis.call('HINCRBY', held, token, -1) <= 0 then redis.call('HDEL', held, token) end
if redis.call('HINCRBY', '{ps}:used', token, -1) <= 0 then redis.call('HDEL', '{ps}:used', token) end
local daemon = '{ps}:daemon:' .. id
local load = redis.call('HINCRBY', daemon, 'load', -1)
if load < 0 then
  load = 0
  redis.call('HSET', daemon, 'load', 0)
end
if redis.call('ZSCORE', '{ps}:pick', id) then
  redis.call('ZADD', '{ps}:pick', load / tonumber(redis.call('HGET', daemon, 'capacity')), id)
end
return 1
"#;

/// Renews a daemon's entry and says when the next renewal is due. An entry
/// that is missing (first start, reaped, or lost with Redis' data) is
/// rebuilt from what the daemon holds, per token: it answers 'missing' when
/// called without that report, so the usual heartbeat stays O(log N). A
/// report given with an entry that exists (after the daemon lost touch with
/// Redis) replaces the entry's counts, so a failover's lost writes and the
/// reservations of creates that failed meanwhile do not stay counted. A
/// daemon that had been registered before and finds its entry gone holds
/// creates back for two of its intervals (`warm_until`), so every other live
/// daemon can bring its counts back first.
/// The interval grows with the fleet so that the whole fleet renews at most
/// MAX_BEATS_PER_SECOND times a second (as Nomad sizes its clients'
/// heartbeat TTLs): an idle fleet of any size costs Redis about the same.
/// ARGV: id, fqdn, capacity, least interval ms, current interval ms,
/// registered before (0/1), report given (0/1), then token, count pairs.
const HEARTBEAT_SCRIPT: &str = r#"
local id, fqdn, capacity = ARGV[1], ARGV[2], tonumber(ARGV[3])
local daemons = redis.call('ZCARD', '{ps}:live')
local interval = math.max(tonumber(ARGV[4]), math.ceil(daemons * 1000 / MAX_BEATS_PER_SECOND))
local ttl = interval * 2
reap()
local daemon = '{ps}:daemon:' .. id
local created = redis.call('EXISTS', daemon) == 0
if created and ARGV[7] == '0' then return {'missing'} end
if ARGV[7] == '1' then
  -- The daemon's report is the truth: what the fleet counted for it goes.
  local held = '{ps}:held:' .. id
  local counted = redis.call('HGETALL', held)
  for i = 1, #counted, 2 do
    if redis.call('HINCRBY', '{ps}:used', counted[i], -tonumber(counted[i + 1])) <= 0 then
      redis.call('HDEL', '{ps}:used', counted[i])
    end
  end
  redis.call('DEL', held)
  local load = 0
  for i = 8, #ARGV, 2 do
    local n = tonumber(ARGV[i + 1])
    redis.call('HINCRBY', held, ARGV[i], n)
    redis.call('HINCRBY', '{ps}:used', ARGV[i], n)
    load = load + n
  end
  redis.call('HSET', daemon, 'load', load)
end
if created then
  if ARGV[6] == '1' then
    local warm = 2 * math.max(interval, tonumber(ARGV[5]))
    redis.call('SET', '{ps}:warm_until', now + warm, 'PX', warm, 'NX')
  end
end
redis.call('HSET', daemon, 'fqdn', fqdn, 'capacity', capacity)
local expired = tonumber(redis.call('ZSCORE', '{ps}:live', id) or '0') < now
redis.call('ZADD', '{ps}:live', now + ttl, id)
redis.call('ZADD', '{ps}:dead', now + ttl * DEAD_AFTER_TTLS, id)
if redis.call('EXISTS', '{ps}:suspect:' .. id) == 0 then
  redis.call('ZADD', '{ps}:pick', tonumber(redis.call('HGET', daemon, 'load')) / capacity, id)
end
local outcome = 'renewed'
if created then outcome = 'created' elseif expired then outcome = 'revived' end
return {outcome, tostring(interval), tostring(now)}
"#;

/// Keeps a daemon out of selection until its suspicion expires (its next
/// heartbeat after that puts it back). ARGV: id, period ms.
const SUSPECT_SCRIPT: &str = r#"
redis.call('SET', '{ps}:suspect:' .. ARGV[1], 1, 'PX', ARGV[2])
redis.call('ZREM', '{ps}:pick', ARGV[1])
"#;

/// A draining daemon leaves selection at once; its entry stays until it
/// expires and is reaped, so the releases of its last sockets still count.
const DEREGISTER_SCRIPT: &str = r#"
redis.call('ZREM', '{ps}:pick', ARGV[1])
redis.call('ZADD', '{ps}:live', 0, ARGV[1])
"#;

pub struct RedisFleet {
    backend: Arc<Backend>,
    reserve: redis::Script,
    release: redis::Script,
    heartbeat: redis::Script,
    suspect: redis::Script,
    deregister: redis::Script,
    /// This process's channel for establish replies.
    reply_channel: String,
    /// Creates waiting for a daemon's replies, by request id.
    waiting: Arc<Mutex<Waiting>>,
    /// Whether the reply subscription is live; without it a reply would be
    /// published to nobody, so creates fail fast instead of timing out.
    subscribed: Arc<AtomicBool>,
    /// Redis's clock minus this machine's, in ms, as last seen by a script
    /// that read `TIME`: deadlines of a hand-off are read on Redis's clock,
    /// so routers and daemons whose clocks disagree still agree on them.
    clock_offset_ms: AtomicI64,
    /// The heartbeats' connection, their own: a daemon beats from its main
    /// thread, which stays responsive while its workers are busy, and a
    /// pooled connection made there would carry the workers' commands
    /// through that thread, waking it twice for each.
    beats: tokio::sync::Mutex<Option<Patient>>,
    /// Woken when a lookup finds Redis has lost every token record, so they
    /// are stored again at once rather than at the next periodic check.
    tokens_lost: tokio::sync::Notify,
}

impl RedisFleet {
    /// Connects lazily: the fleet is usable (and reports errors) while Redis
    /// is down, and recovers by itself when it returns. `redis://` or, for
    /// TLS trusting the public roots, `rediss://`; an ACL user and password
    /// go in the URL (`redis://user:password@host:port`).
    /// For high availability, `redis+sentinel://...` or `redis+cluster://...`
    /// (see [`backend`]).
    pub fn new(url: &str) -> Result<Arc<Self>, FleetError> {
        Ok(Self::with_backend(Backend::open(url)?))
    }

    /// As [`RedisFleet::new`], for a `rediss://` server whose certificate a
    /// private CA signed, or that asks for a client certificate.
    pub fn with_certificates(url: &str, certificates: redis::TlsCertificates) -> Result<Arc<Self>, FleetError> {
        Ok(Self::with_backend(Backend::direct(redis::Client::build_with_tls(url, certificates)?)?))
    }

    fn with_backend(backend: Backend) -> Arc<Self> {
        Arc::new(RedisFleet {
            backend: Arc::new(backend),
            reserve: script(RESERVE_SCRIPT),
            release: script(RELEASE_SCRIPT),
            heartbeat: script(HEARTBEAT_SCRIPT),
            suspect: script(SUSPECT_SCRIPT),
            deregister: script(DEREGISTER_SCRIPT),
            reply_channel: format!("ps:replies:{}", uuid::Uuid::new_v4().simple()),
            waiting: Arc::default(),
            subscribed: Arc::default(),
            clock_offset_ms: AtomicI64::new(0),
            beats: tokio::sync::Mutex::new(None),
            tokens_lost: tokio::sync::Notify::new(),
        })
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
        self.subscribe(self.reply_channel.clone(), Fanout::ToOne, self.subscribed.clone(), deliver);
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
        fanout: Fanout,
        subscribed: Arc<AtomicBool>,
        on_message: impl Fn(&[u8]) + Send + Sync + 'static,
    ) {
        let backend = self.backend.clone();
        tokio::spawn(async move {
            let mut outage = Outage::new(format!("subscription to {channel}"));
            loop {
                if let Err(e) = relay(&backend, &channel, fanout, &subscribed, &mut outage, &on_message).await {
                    outage.failed(&e);
                }
                subscribed.store(false, Ordering::Release);
                tokio::time::sleep(RESUBSCRIBE_DELAY).await;
            }
        });
    }

    /// Why Redis refuses this process as configured (a wrong password or ACL
    /// user, a server certificate that does not verify), if it says so now.
    /// `None` when it answers, and also when it cannot be reached at all: an
    /// outage is ridden out, a wrong configuration is not.
    pub async fn configuration_refused(&self) -> Option<String> {
        match self.backend.ping_afresh().await {
            Err(e) if refuses_configuration(&e) => Some(e.to_string()),
            _ => None,
        }
    }

    /// Resolves when a token lookup has found the token records gone.
    pub async fn tokens_lost(&self) {
        self.tokens_lost.notified().await
    }

    /// Runs the heartbeat script for `beat`, again with the daemon's
    /// holdings if the fleet asks for them.
    async fn renew(&self, conn: &mut Patient, beat: &Heartbeat<'_>) -> Result<Renewal, FleetError> {
        let call = |report: bool| {
            let mut invocation = self.heartbeat.key(SCRIPT_KEY);
            let daemon = beat.daemon;
            invocation
                .arg(&daemon.id)
                .arg(&daemon.fqdn)
                .arg(daemon.capacity)
                .arg(beat.min_interval.as_millis() as u64)
                .arg(beat.interval.as_millis() as u64)
                .arg(u8::from(beat.registered_before))
                .arg(u8::from(report));
            if report {
                for (token, count) in (beat.holdings)() {
                    invocation.arg(token).arg(count);
                }
            }
            invocation
        };
        let sent_at = unix_millis();
        let mut outcome: Vec<String> = call(beat.reconcile).invoke_async(conn).await?;
        if outcome.first().is_some_and(|o| o == "missing") {
            outcome = call(true).invoke_async(conn).await?;
        }
        self.saw_redis_time(outcome.get(2), sent_at);
        let registration = match outcome.first().map(String::as_str) {
            Some("created") => Registration::Created,
            Some("revived") => Registration::Revived,
            _ => Registration::Renewed,
        };
        let next_in = outcome.get(1).and_then(|ms| ms.parse().ok()).map_or(beat.min_interval, Duration::from_millis);
        Ok(Renewal { registration, next_in })
    }

    async fn conn(&self) -> Result<Link, FleetError> {
        self.backend.pooled().await
    }

    /// Takes the time a script read from Redis, for a call that left at
    /// `sent_at` and is back now: Redis read it about halfway through.
    fn saw_redis_time(&self, redis_now: Option<&String>, sent_at: u64) {
        let Some(redis_now) = redis_now.and_then(|ms| ms.parse::<i64>().ok()) else { return };
        let midway = (sent_at + unix_millis()) / 2;
        self.clock_offset_ms.store(redis_now - midway as i64, Ordering::Relaxed);
    }
}

/// Whether an error says the configuration is wrong rather than Redis away.
fn refuses_configuration(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
        // rustls: a certificate from an unknown CA, for another name, expired.
        || e.to_string().contains("invalid peer certificate")
}

/// A script with the prelude every script shares.
fn script(body: &str) -> redis::Script {
    let body = body
        .replace("DEAD_AFTER_TTLS", &DEAD_AFTER_TTLS.to_string())
        .replace("MAX_BEATS_PER_SECOND", &MAX_BEATS_PER_SECOND.to_string());
    redis::Script::new(&format!("{PRELUDE}{body}"))
}

/// Subscribes to `channel` and hands each reply to the create waiting for it.
type Waiting = HashMap<String, mpsc::Sender<EstablishReply>>;

/// One subscription's life: subscribe, hand over messages until it breaks.
async fn relay(
    backend: &Backend,
    channel: &str,
    fanout: Fanout,
    subscribed: &AtomicBool,
    outage: &mut Outage,
    on_message: &(impl Fn(&[u8]) + Send + Sync),
) -> Result<(), redis::RedisError> {
    let mut messages = backend.messages(channel, fanout).await?;
    subscribed.store(true, Ordering::Release);
    outage.ended();
    while let Some(payload) = messages.next().await {
        on_message(&payload);
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

    async fn heartbeat(&self, beat: &Heartbeat<'_>) -> Result<Renewal, FleetError> {
        let mut conn = {
            let mut own = self.beats.lock().await;
            match own.as_ref() {
                Some(conn) => conn.clone(),
                None => own.insert(self.backend.own_connection(REDIS_TIMEOUT).await?).clone(),
            }
        };
        let renewal = self.renew(&mut conn, beat).await;
        if renewal.is_err() {
            // Made anew for the next beat, in case the connection broke.
            *self.beats.lock().await = None;
        }
        renewal
    }

    async fn deregister(&self, daemon_id: &str) -> Result<(), FleetError> {
        let _: () = self.deregister.key(SCRIPT_KEY).arg(daemon_id).invoke_async(&mut self.conn().await?).await?;
        Ok(())
    }

    async fn reserve(&self, token: &str, max_connections: u32) -> Result<Reservation, FleetError> {
        let mut conn = self.conn().await?;
        let sent_at = unix_millis();
        let outcome: Vec<String> =
            self.reserve.key(SCRIPT_KEY).arg(token).arg(max_connections).invoke_async(&mut conn).await?;
        match outcome.as_slice() {
            [status, daemon_id, used, redis_now] if status == "ok" => {
                self.saw_redis_time(Some(redis_now), sent_at);
                Ok(Reservation { daemon_id: daemon_id.clone(), used: used.parse().unwrap_or(0) })
            }
            [status] if status == "limit" => Err(FleetError::LimitReached),
            [status] if status == "nocapacity" => Err(FleetError::NoCapacity),
            [status] if status == "warming" => {
                Err(FleetError::Unavailable("the registry is being rebuilt after Redis lost its data".into()))
            }
            _ => Err(FleetError::NoDaemon),
        }
    }

    async fn release(&self, token: &str, daemon_id: &str) -> Result<(), FleetError> {
        let _: u8 =
            self.release.key(SCRIPT_KEY).arg(token).arg(daemon_id).invoke_async(&mut self.conn().await?).await?;
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
            let ttl_ms = request.expires_at_ms.saturating_sub(self.now_ms()).max(1);
            let mut conn = self.conn().await?;
            let _: () =
                redis::pipe().rpush(&inbox, payload).pexpire(&inbox, ttl_ms as i64).query_async(&mut conn).await?;
            drop(conn);
            super::await_outcome(&mut replies, &request, self.now_ms()).await
        }
        .await;
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&request_id);
        outcome
    }

    async fn mark_suspect(&self, daemon_id: &str, period: Duration) -> Result<(), FleetError> {
        let millis = period.as_millis().max(1) as u64;
        let _: () =
            self.suspect.key(SCRIPT_KEY).arg(daemon_id).arg(millis).invoke_async(&mut self.conn().await?).await?;
        Ok(())
    }

    fn inbox(&self, daemon_id: &str) -> Box<dyn Inbox> {
        Box::new(RedisInbox { backend: self.backend.clone(), key: inbox_key(daemon_id), conn: None })
    }

    async fn reply(&self, request: &EstablishRequest, reply: EstablishReply) -> Result<bool, FleetError> {
        if self.now_ms() > request.expires_at_ms {
            return Ok(false);
        }
        let payload = serde_json::to_string(&reply).expect("replies serialize");
        let publish = self.backend.publish(&request.reply_to, payload, Fanout::ToOne);
        let receivers: u64 = publish.query_async(&mut self.conn().await?).await?;
        Ok(receivers > 0)
    }

    fn now_ms(&self) -> u64 {
        unix_millis().saturating_add_signed(self.clock_offset_ms.load(Ordering::Relaxed))
    }

    fn watch_revocations(&self, revoked: Box<dyn Fn(String) + Send + Sync>) {
        self.subscribe(REVOCATIONS_CHANNEL.to_owned(), Fanout::Broadcast, Arc::default(), move |payload: &[u8]| {
            revoked(String::from_utf8_lossy(payload).into_owned())
        });
    }

    async fn ping(&self) -> Result<(), FleetError> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn().await?).await?;
        Ok(())
    }
}

/// A worker's blocking pops on its daemon's inbox list, over a connection of
/// its own: a pop holds its connection for the whole wait and must not stall
/// other commands.
struct RedisInbox {
    backend: Arc<Backend>,
    key: String,
    conn: Option<Patient>,
}

#[async_trait]
impl Inbox for RedisInbox {
    async fn next_request(&mut self) -> Result<Option<EstablishRequest>, FleetError> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self.conn.insert(self.backend.own_connection(backend::patient_timeout()).await?),
        };
        let popped: Option<(String, String)> = match conn.blpop(&self.key, INBOX_WAIT_SECS).await {
            Ok(popped) => popped,
            Err(e) => {
                // Drop the broken connection so the next call reconnects.
                self.conn = None;
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
}
