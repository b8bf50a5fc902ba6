//! A whole polysocket deployment inside the test: a router and daemons on
//! loopback ports, coordinated by an in-memory fleet or a real Redis, in
//! front of a real upstream WebSocket server.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use polysocket_common::fleet::{Fleet, MemoryFleet, RedisFleet};
use polysocket_common::token::TokenRecord;
use polysocket_tests::http::{Http, Reply, Streamed, query};
use polysocket_tests::init_logs;
use polysocket_tests::redis_server::RedisServer;
use polysocket_tests::upstream::UpstreamServer;
use serde_json::Value;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

/// The callback every JSONP request in these tests uses.
pub const CB: &str = "ps.cb_1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Redis,
}

pub struct Options {
    pub daemons: usize,
    pub tokens: Vec<TokenRecord>,
    pub daemon_args: Vec<&'static str>,
    /// Router flags, after the test defaults (which lift the per-client
    /// create limit: every test client is 127.0.0.1).
    pub router_args: Vec<&'static str>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            daemons: 2,
            tokens: default_tokens(),
            daemon_args: vec!["--allow-private-targets"],
            router_args: vec![],
        }
    }
}

/// `dev`: any origin, any loopback target, 100 sockets.
/// `strict`: only https://app.test, only `/echo`, one socket.
/// `lan`: like `dev`, and allowed to reach loopback on purpose.
pub fn default_tokens() -> Vec<TokenRecord> {
    serde_json::from_value(serde_json::json!([
        {"token": "dev", "targets": ["ws://127.0.0.1:*/*"], "origins": ["*"], "max_connections": 100},
        {"token": "strict", "targets": ["ws://127.0.0.1:*/echo"], "origins": ["https://app.test"], "max_connections": 1},
        {"token": "lan", "targets": [{"pattern": "ws://127.0.0.1:*/*", "allow_private": ["127.0.0.0/8"]}],
         "origins": ["*"], "max_connections": 100},
    ]))
    .expect("valid token records")
}

pub struct Daemon {
    pub http: Http,
    pub fqdn: String,
    port: u16,
    /// Starts the daemon's drain, as SIGTERM would; sent on drop too.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The daemon's own thread, as if it were its own process: its sockets
    /// never share a thread with the test's client.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts a daemon with `args` on its own thread and actix system.
    fn start(i: usize, fleet: Arc<dyn Fleet>, extra_args: &[&str]) -> Daemon {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let fqdn = format!("d{i}.localhost:{port}");
        let mut args = vec!["polysocketd", "--fqdn", &fqdn, "--heartbeat-interval", "500ms", "--shutdown-grace", "2s"];
        args.extend(extra_args);
        let config = <polysocketd::config::DaemonConfig as clap::Parser>::try_parse_from(args).expect("daemon args");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let app = polysocketd::app::Application::serve(listener, fleet, &config).expect("daemon starts");
                let _ = app.run_until_stopped(async { drop(stopped.await) }).await;
            })
        });
        Daemon { http: Http::new(port), fqdn, port, stop: Some(stop), thread: Some(thread) }
    }

    /// Drains the daemon as SIGTERM would, and waits until it has stopped.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Dropping the sender starts the drain; the thread ends on its own.
        self.stop.take();
    }
}

pub struct Stack {
    pub router: Http,
    pub daemons: Vec<Daemon>,
    pub upstream: UpstreamServer,
    /// Kept so the server lives as long as the stack.
    pub _redis: Option<RedisServer>,
}

/// An open bridged socket, as a client sees it.
pub struct Socket {
    pub id: String,
    /// `{uniq}.<daemon fqdn>`, sent as the Host of every request.
    pub host: String,
    pub protocol: String,
    http: Http,
}

impl Stack {
    pub async fn start(backend: Backend, options: Options) -> Stack {
        init_logs();
        let upstream = UpstreamServer::start();
        let redis = (backend == Backend::Redis).then(RedisServer::start);
        // Each component gets its own fleet client, as separate processes would.
        let memory = MemoryFleet::new();
        let fleet = || async {
            match &redis {
                Some(redis) => {
                    let fleet = RedisFleet::new(&redis.url()).expect("redis url");
                    fleet.listen_for_replies().await;
                    fleet as Arc<dyn Fleet>
                }
                None => memory.clone() as Arc<dyn Fleet>,
            }
        };
        let router_fleet = fleet().await;
        router_fleet.store_tokens(&options.tokens).await.expect("store tokens");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let settings = router_settings(&options.router_args);
        let router_app = router::app::Application::serve(listener, router_fleet, &settings).expect("router starts");
        let router = Http::new(router_app.port());
        actix_web::rt::spawn(router_app.run_until_stopped(std::future::pending()));

        let mut daemons = Vec::new();
        for i in 1..=options.daemons {
            let daemon = Daemon::start(i, fleet().await, &options.daemon_args);
            daemon.http.wait_until_ok("/readyz", Duration::from_secs(10)).await;
            daemons.push(daemon);
        }
        Stack { router, daemons, upstream, _redis: redis }
    }

    /// The URL of the stack's Redis (a Redis stack only).
    pub fn redis_url(&self) -> String {
        self._redis.as_ref().expect("a stack on Redis").url()
    }

    /// `GET /create` with the given parameters and extra headers.
    pub async fn create(&self, params: &[(&str, &str)], headers: &[(&str, &str)]) -> Reply {
        self.router.get(None, &format!("/create?{}", query(params)), headers).await
    }

    /// Creates a socket to `path` on the upstream with the `dev` token.
    pub async fn open(&self, path: &str) -> Socket {
        self.open_with(path, &[]).await
    }

    pub async fn open_with(&self, path: &str, extra: &[(&str, &str)]) -> Socket {
        let reply = self.create_dev(&self.upstream.url(path), extra).await;
        assert_eq!(reply.status, 200);
        self.socket_from(&reply.jsonp(CB))
    }

    /// Creates a socket to any target the `dev` token allows.
    pub async fn open_target(&self, target: &str) -> Socket {
        self.socket_from(&self.create_dev(target, &[]).await.jsonp(CB))
    }

    /// Like [`Stack::open_target`], but `None` when the create fails.
    pub async fn try_open_target(&self, target: &str) -> Option<Socket> {
        let created = self.create_dev(target, &[]).await.jsonp(CB);
        (created["ok"] == true).then(|| self.socket_from(&created))
    }

    async fn create_dev(&self, target: &str, extra: &[(&str, &str)]) -> Reply {
        let mut params = vec![("cb", CB), ("from", "tests"), ("target", target), ("token", "dev")];
        params.extend_from_slice(extra);
        self.create(&params, &[]).await
    }

    /// The client's view of the socket a successful create answer names.
    pub fn socket_from(&self, created: &Value) -> Socket {
        assert_eq!(created["ok"], true, "create failed: {created}");
        let host = created["fqdn"].as_str().unwrap().to_owned();
        let daemon = self
            .daemons
            .iter()
            .find(|d| host.ends_with(&format!(".{}", d.fqdn)))
            .unwrap_or_else(|| panic!("{host} names no daemon of this stack"));
        Socket::new(created, daemon.http.clone())
    }
}

/// The router's settings in tests: the production defaults, without the
/// per-client rate limit, then `extra`.
fn router_settings(extra: &[&str]) -> polysocket_common::cli::ServiceArgs {
    #[derive(clap::Parser)]
    #[command(args_override_self = true)]
    struct Args {
        #[command(flatten)]
        service: polysocket_common::cli::ServiceArgs,
    }
    let mut args = vec!["router", "--create-rate-per-ip", "0"];
    args.extend_from_slice(extra);
    <Args as clap::Parser>::try_parse_from(args).expect("router args").service
}

impl Socket {
    /// The socket a successful create answer names, on the daemon `http` reaches.
    pub fn new(created: &Value, http: Http) -> Socket {
        assert_eq!(created["ok"], true, "create failed: {created}");
        Socket {
            id: created["socket"].as_str().unwrap().to_owned(),
            protocol: created["protocol"].as_str().unwrap().to_owned(),
            host: created["fqdn"].as_str().unwrap().to_owned(),
            http,
        }
    }

    /// `GET /s/<id>?...` with the callback added.
    pub async fn send_get(&self, params: &[(&str, &str)]) -> Reply {
        let mut all = vec![("cb", CB)];
        all.extend_from_slice(params);
        self.http.get(Some(&self.host), &format!("/s/{}?{}", self.id, query(&all)), &[]).await
    }

    /// Sends a text message and checks it was accepted.
    pub async fn send_text(&self, text: &str) {
        let reply = self.send_get(&[("t", "t"), ("d", text)]).await;
        assert_eq!(reply.status, 201, "{reply:?}");
        assert_eq!(reply.jsonp(CB), serde_json::json!({"ok": true}));
    }

    pub async fn post(&self, path_query: &str, content_type: &str, body: &[u8]) -> Reply {
        self.try_post(path_query, content_type, body).await.expect("POST failed")
    }

    pub async fn try_post(
        &self,
        path_query: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<Reply, awc::error::SendRequestError> {
        let path = format!("/s/{}{}", self.id, path_query);
        self.http.try_post(Some(&self.host), &path, content_type, body.to_vec()).await
    }

    /// A request with any method on this socket's host, path and query as given.
    pub async fn request(&self, method: awc::http::Method, path_and_query: &str) -> Reply {
        self.http.request(method, Some(&self.host), path_and_query).await
    }

    /// A GET on this socket's host, path and query as given.
    pub async fn http_get(&self, path_and_query: &str) -> Reply {
        self.http.get(Some(&self.host), path_and_query, &[]).await
    }

    /// `GET /j/<id>?...` with the callback added.
    /// Opens a streaming receive (`/j` with `params`, no callback).
    pub async fn stream(&self, params: &[(&str, &str)], headers: &[(&str, &str)]) -> Streamed {
        self.http.stream(Some(&self.host), &format!("/j/{}?{}", self.id, query(params)), headers).await
    }

    /// A request with extra headers (e.g. `Origin`) to the socket's host.
    pub async fn get_with(&self, path_and_query: &str, headers: &[(&str, &str)]) -> Reply {
        self.http.get(Some(&self.host), path_and_query, headers).await
    }

    pub async fn poll_raw(&self, params: &[(&str, &str)]) -> Reply {
        self.try_poll(params).await.expect("GET failed")
    }

    /// [`Socket::try_poll`] with owned values, for retry closures.
    pub async fn try_poll_owned(&self, params: &[(&str, String)]) -> Result<Reply, awc::error::SendRequestError> {
        let borrowed: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.try_poll(&borrowed).await
    }

    pub async fn try_poll(&self, params: &[(&str, &str)]) -> Result<Reply, awc::error::SendRequestError> {
        let mut all = vec![("cb", CB)];
        all.extend_from_slice(params);
        self.http.try_get(Some(&self.host), &format!("/j/{}?{}", self.id, query(&all)), &[]).await
    }

    /// Polls until `count` messages (heartbeats excepted) have arrived.
    pub async fn receive(&self, count: usize) -> Vec<Value> {
        let mut received = Vec::new();
        for _ in 0..50 {
            let reply = self.poll_raw(&[("ttl", "2000")]).await;
            assert_eq!(reply.status, 200, "{reply:?}");
            let body = reply.jsonp(CB);
            assert_eq!(body["ok"], true);
            received.extend(body["messages"].as_array().unwrap().iter().filter(|m| m["type"] != "heartbeat").cloned());
            if received.len() >= count {
                return received;
            }
        }
        panic!("expected {count} messages, got {received:?}");
    }
}
