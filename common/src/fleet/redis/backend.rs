//! Where the fleet's Redis is, chosen by the `--redis` URL: one server
//! (`redis://`, `rediss://`), the primary that Sentinels name
//! (`redis+sentinel://`) or a Redis Cluster (`redis+cluster://`). The
//! fleet asks it for pooled connections for commands, a connection of its
//! own for a blocking pop, and subscriptions; each deployment answers with
//! the redis crate's own support for it.

use super::{INBOX_WAIT_SECS, REDIS_TIMEOUT};
use crate::fleet::FleetError;
use deadpool::managed::{Metrics, Object, RecycleError, RecycleResult};
use deadpool_redis::Runtime;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use redis::PushKind;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::SentinelClient;
use std::time::Duration;

/// How a `--redis` URL names Sentinels rather than one server.
pub const SENTINEL_SCHEME: &str = "redis+sentinel://";
/// How a `--redis` URL names the nodes of a Redis Cluster.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

pub(super) enum Backend {
    /// One server, plain or TLS.
    Direct { client: redis::Client, pool: Pool<deadpool_redis::Manager> },
    /// The primary that Redis Sentinels name, followed through failovers:
    /// each new connection asks the sentinels where the primary is now, and
    /// connections to a primary that failed break and are replaced.
    Sentinel { sentinels: tokio::sync::Mutex<SentinelClient>, pool: Pool<deadpool_redis::sentinel::Manager> },
    /// A Redis Cluster: each command goes to the node that holds its key's
    /// slot. The fleet's keys share the slot of `{ps}`; each inbox has its
    /// own, so blocking pops spread over the nodes.
    Cluster {
        pool: Pool<deadpool_redis::cluster::Manager>,
        /// For blocking pops, whose answer may take the whole wait.
        patient: ClusterClient,
        /// For subscriptions, each with a client of its own.
        nodes: Vec<String>,
    },
}

/// Who hears a message. A reply is for one router, and whether it heard is
/// what matters (a daemon closes a socket no router waits for): in a Redis
/// Cluster, `PUBLISH` counts only the subscribers of the node it ran on, so
/// replies go by sharded pub/sub, where the node holding the channel's slot
/// both counts and delivers. Announcements to every daemon are broadcast.
#[derive(Clone, Copy)]
pub enum Fanout {
    ToOne,
    Broadcast,
}

impl Backend {
    /// One server, or Sentinels or a Cluster by the URL's scheme.
    pub fn open(url: &str) -> Result<Self, FleetError> {
        if url.starts_with(SENTINEL_SCHEME) {
            Self::sentinel(url)
        } else if url.starts_with(CLUSTER_SCHEME) {
            Self::cluster(url)
        } else {
            Self::direct(redis::Client::open(url)?)
        }
    }

    pub fn direct(client: redis::Client) -> Result<Self, FleetError> {
        let pool = pool(deadpool_redis::Manager::new(client.get_connection_info().clone())?)?;
        Ok(Backend::Direct { client, pool })
    }

    /// `redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]`
    /// (port 26379 unless given). The user and password are the primary's;
    /// the sentinels are asked without one.
    fn sentinel(url: &str) -> Result<Self, FleetError> {
        let (user_info, hosts, path) = split_url(url, SENTINEL_SCHEME)?;
        let (service, db) = path.split_once('/').unwrap_or((path, "0"));
        if service.is_empty() {
            return Err(invalid(url, "it names no service"));
        }
        let sentinels = node_urls("", hosts, 26379);
        // The redis crate reads (and percent-decodes) the primary's credentials.
        let primary = redis::IntoConnectionInfo::into_connection_info(format!("redis://{user_info}@localhost/{db}"))?;
        let primary = primary.redis_settings();
        let credentials = deadpool_redis::RedisConnectionInfo {
            db: primary.db(),
            username: primary.username().map(str::to_owned),
            password: primary.password().map(str::to_owned),
            ..Default::default()
        };
        let node = || deadpool_redis::sentinel::SentinelNodeConnectionInfo {
            tls_mode: None,
            redis_connection_info: Some(credentials.clone()),
        };
        let manager = deadpool_redis::sentinel::Manager::new(
            sentinels.clone(),
            service.to_owned(),
            Some(node()),
            deadpool_redis::sentinel::SentinelServerType::Master,
        )?;
        let pool = pool(manager)?;
        let master = redis::sentinel::SentinelServerType::Master;
        let sentinels = SentinelClient::build(sentinels, service, Some(node().into()), master)?;
        Ok(Backend::Sentinel { sentinels: tokio::sync::Mutex::new(sentinels), pool })
    }

    /// `redis+cluster://[user:password@]host:port[,host:port...]`: any of
    /// the cluster's nodes (port 6379 unless given); the others are found.
    fn cluster(url: &str) -> Result<Self, FleetError> {
        let (user_info, hosts, path) = split_url(url, CLUSTER_SCHEME)?;
        if !path.is_empty() {
            return Err(invalid(url, "a cluster has no databases or services to name"));
        }
        let nodes = node_urls(user_info, hosts, 6379);
        let pool = pool(deadpool_redis::cluster::Manager::new(nodes.clone(), false)?)?;
        let patient = ClusterClient::builder(nodes.clone())
            .connection_timeout(REDIS_TIMEOUT)
            .response_timeout(patient_timeout())
            .build()?;
        Ok(Backend::Cluster { pool, patient, nodes })
    }

    /// A pooled connection for commands.
    pub async fn pooled(&self) -> Result<Link, FleetError> {
        fn failed(e: impl std::error::Error + Send + Sync + 'static) -> FleetError {
            crate::fleet::REDIS_ERRORS.inc();
            FleetError::Unavailable(Box::new(e))
        }
        Ok(match self {
            Backend::Direct { pool, .. } => Link::Direct(pool.get().await.map_err(failed)?),
            Backend::Sentinel { pool, .. } => Link::Sentinel(pool.get().await.map_err(failed)?),
            Backend::Cluster { pool, .. } => Link::Cluster(pool.get().await.map_err(failed)?),
        })
    }

    /// A connection of its own, not pooled: for blocking pops, which hold
    /// their connection for the whole wait (`patient_timeout()`), and for a
    /// check of the configuration that must not reuse a pooled connection.
    /// A cluster's waits as long as a pop may.
    pub async fn own_connection(&self, response_timeout: Duration) -> redis::RedisResult<Patient> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(response_timeout));
        Ok(match self {
            Backend::Cluster { patient, .. } => Patient::Cluster(patient.get_async_connection().await?),
            _ => Patient::Single(self.primary().await?.get_multiplexed_async_connection_with_config(&config).await?),
        })
    }

    /// The primary (of one server, or as the sentinels name it now).
    async fn primary(&self) -> redis::RedisResult<redis::Client> {
        match self {
            Backend::Direct { client, .. } => Ok(client.clone()),
            Backend::Sentinel { sentinels, .. } => sentinels.lock().await.async_get_client().await,
            Backend::Cluster { .. } => unreachable!("a cluster has a primary per slot"),
        }
    }

    /// The command that publishes `payload` on `channel`.
    pub fn publish(&self, channel: &str, payload: String, fanout: Fanout) -> redis::Cmd {
        let command = match (self, fanout) {
            (Backend::Cluster { .. }, Fanout::ToOne) => "SPUBLISH",
            _ => "PUBLISH",
        };
        redis::cmd(command).arg(channel).arg(payload).take()
    }

    /// The payloads published on `channel` from now on, until the
    /// subscription breaks (a cluster's resubscribes by itself).
    pub async fn messages(&self, channel: &str, fanout: Fanout) -> redis::RedisResult<BoxStream<'static, Vec<u8>>> {
        let Backend::Cluster { nodes, .. } = self else {
            let mut pubsub = self.primary().await?.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            return Ok(pubsub.into_on_message().map(|message| message.get_payload_bytes().to_vec()).boxed());
        };
        // The redis crate's cluster connection subscribes over RESP3 and
        // hands the messages to a channel.
        let (pushed, received) = tokio::sync::mpsc::unbounded_channel();
        let client = ClusterClient::builder(nodes.clone())
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(pushed)
            .connection_timeout(REDIS_TIMEOUT)
            .response_timeout(REDIS_TIMEOUT)
            .build()?;
        let mut conn = client.get_async_connection().await?;
        match fanout {
            Fanout::ToOne => conn.ssubscribe(channel).await?,
            Fanout::Broadcast => conn.subscribe(channel).await?,
        }
        // The connection lives as long as the stream.
        Ok(futures_util::stream::unfold((conn, received), |(conn, mut received)| async move {
            loop {
                let push = received.recv().await?;
                if let (PushKind::Message | PushKind::SMessage, Some(redis::Value::BulkString(payload))) =
                    (&push.kind, push.data.get(1))
                {
                    return Some((payload.clone(), (conn, received)));
                }
            }
        })
        .boxed())
    }

    /// Answers PING over a new connection, with the configured credentials.
    pub async fn ping_afresh(&self) -> redis::RedisResult<()> {
        redis::cmd("PING").query_async(&mut self.own_connection(REDIS_TIMEOUT).await?).await
    }
}

/// A pool of connections that deadpool-redis's manager `M` opens.
type Pool<M> = deadpool::managed::Pool<Reusing<M>>;

fn pool<M: deadpool::managed::Manager>(manager: M) -> Result<Pool<M>, FleetError> {
    deadpool::managed::Pool::builder(Reusing(manager))
        .config(pool_config())
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| FleetError::Unavailable(Box::new(e)))
}

/// Connections used within this long are handed out again unchecked.
const TRUSTED_FOR: Duration = Duration::from_millis(500);

/// deadpool-redis checks every connection it hands out with a round trip
/// (`UNWATCH` and `PING`), which doubled the round trips of every fleet
/// command: on a daemon that is two more wake-ups per create. As HikariCP
/// does, a connection used within [`TRUSTED_FOR`] is handed out unchecked,
/// and one whose command failed is never handed out again ([`Tracked`]),
/// so a broken connection still costs at most the command that found it.
pub(super) struct Reusing<M>(M);

impl<M: deadpool::managed::Manager> deadpool::managed::Manager for Reusing<M> {
    type Type = Tracked<M::Type>;
    type Error = M::Error;

    async fn create(&self) -> Result<Self::Type, Self::Error> {
        Ok(Tracked { conn: self.0.create().await?, unfit: false })
    }

    async fn recycle(&self, tracked: &mut Self::Type, metrics: &Metrics) -> RecycleResult<Self::Error> {
        if tracked.unfit {
            return Err(RecycleError::message("a command on it failed"));
        }
        if metrics.last_used() < TRUSTED_FOR {
            return Ok(());
        }
        self.0.recycle(&mut tracked.conn, metrics).await
    }
}

/// A pooled connection that remembers whether a command on it failed in a
/// way that makes it unfit for the next (see [`unfits`]).
pub(super) struct Tracked<C> {
    conn: C,
    unfit: bool,
}

/// Whether an error leaves the connection unfit: anything but an error
/// Redis answered as usual (a script's own error, a script not loaded yet),
/// such as a broken or silent connection or a primary demoted to replica.
fn unfits(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    !matches!(e.kind(), ErrorKind::Server(ServerErrorKind::ResponseError | ServerErrorKind::NoScript))
}

impl<C: ConnectionLike + Send> ConnectionLike for Tracked<C> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            let answer = self.conn.req_packed_command(cmd).await;
            self.unfit |= answer.as_ref().is_err_and(unfits);
            answer
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async move {
            let answers = self.conn.req_packed_commands(pipeline, offset, count).await;
            self.unfit |= answers.as_ref().is_err_and(unfits);
            answers
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

/// A pooled connection to the server [`Backend`] names.
pub(super) enum Link {
    Direct(Object<Reusing<deadpool_redis::Manager>>),
    Sentinel(Object<Reusing<deadpool_redis::sentinel::Manager>>),
    Cluster(Object<Reusing<deadpool_redis::cluster::Manager>>),
}

/// A connection of its own (see [`Backend::own_connection`]), shared by clones.
#[derive(Clone)]
pub(super) enum Patient {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// Implements `ConnectionLike` for an enum of connections by handing each
/// call to the variant's own.
macro_rules! connection_like {
    ($type:ident { $($variant:ident),+ }) => {
        impl ConnectionLike for $type {
            fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
                match self { $($type::$variant(conn) => conn.req_packed_command(cmd),)+ }
            }

            fn req_packed_commands<'a>(
                &'a mut self,
                pipeline: &'a redis::Pipeline,
                offset: usize,
                count: usize,
            ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
                match self { $($type::$variant(conn) => conn.req_packed_commands(pipeline, offset, count),)+ }
            }

            fn get_db(&self) -> i64 {
                match self { $($type::$variant(conn) => conn.get_db(),)+ }
            }
        }
    };
}
connection_like!(Link { Direct, Sentinel, Cluster });
connection_like!(Patient { Single, Cluster });

fn pool_config() -> deadpool_redis::PoolConfig {
    deadpool_redis::PoolConfig {
        max_size: 32,
        timeouts: deadpool_redis::Timeouts {
            wait: Some(REDIS_TIMEOUT),
            create: Some(REDIS_TIMEOUT),
            recycle: Some(REDIS_TIMEOUT),
        },
        ..Default::default()
    }
}

/// A pop answers within its wait, or Redis is gone without a word.
pub fn patient_timeout() -> Duration {
    Duration::from_secs_f64(INBOX_WAIT_SECS) + REDIS_TIMEOUT
}

/// `scheme[user_info@]hosts[/path]` into its user info, comma-separated
/// hosts and path (without its slash).
fn split_url<'a>(url: &'a str, scheme: &str) -> Result<(&'a str, &'a str, &'a str), FleetError> {
    let rest = url.strip_prefix(scheme).ok_or_else(|| invalid(url, "wrong scheme"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (user_info, hosts) = authority.rsplit_once('@').unwrap_or(("", authority));
    if hosts.is_empty() {
        return Err(invalid(url, "it names no host"));
    }
    Ok((user_info, hosts, path))
}

/// `redis://[user_info@]host:port` for each of the comma-separated hosts.
fn node_urls(user_info: &str, hosts: &str, default_port: u16) -> Vec<String> {
    let at = if user_info.is_empty() { String::new() } else { format!("{user_info}@") };
    hosts
        .split(',')
        .map(|host| match host.contains(':') {
            true => format!("redis://{at}{host}"),
            false => format!("redis://{at}{host}:{default_port}"),
        })
        .collect()
}

fn invalid(url: &str, why: &str) -> FleetError {
    let scheme = url.split("://").next().unwrap_or_default();
    let error = redis::RedisError::from((
        redis::ErrorKind::InvalidClientConfig,
        "invalid redis url",
        format!("{scheme}://...: {why}"),
    ));
    error.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_and_cluster_urls_name_their_nodes() {
        assert_eq!(
            split_url("redis+sentinel://u:p%40ss@a:1,b/svc/2", SENTINEL_SCHEME).unwrap(),
            ("u:p%40ss", "a:1,b", "svc/2")
        );
        assert_eq!(node_urls("", "a:1,b", 26379), ["redis://a:1", "redis://b:26379"]);
        assert_eq!(node_urls("u:p", "a:7000", 6379), ["redis://u:p@a:7000"]);
        assert!(split_url("redis+cluster:///x", CLUSTER_SCHEME).is_err());
        assert!(Backend::open("redis+sentinel://a:1").is_err(), "a sentinel url names its service");
        assert!(Backend::open("redis+cluster://a:1/0").is_err(), "a cluster has no databases");
    }
}
