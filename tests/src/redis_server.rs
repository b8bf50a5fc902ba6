//! A `redis-server` of the test's own, on a free port: plain, with an ACL
//! user, over TLS with a certificate authority made up for the test, or a
//! replica; and Redis Sentinels watching one.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// Arguments beyond port and persistence (TLS files, ACL users).
    extra: Vec<String>,
    /// The TLS files' folder, for a server started with [`RedisServer::start_tls`].
    tls: Option<PathBuf>,
    /// Where a replica stores what it syncs.
    scratch: Option<PathBuf>,
}

impl RedisServer {
    /// Starts a fresh, empty, non-persistent Redis and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(Vec::new(), None)
    }

    /// A Redis whose only user is `user` with `password` (the default user
    /// is off), as managed Redis services with ACLs are set up.
    pub fn start_with_user(user: &str, password: &str) -> Self {
        let acl = ["--user", "default", "off", "--user", user, "on", &format!(">{password}"), "~*", "&*", "+@all"];
        Self::start_with(acl.map(str::to_owned).to_vec(), None)
    }

    /// A Redis that speaks only TLS, with a certificate for `localhost`
    /// signed by a CA made up for it (nothing trusts it by default; see
    /// [`RedisServer::ca_file`]). Clients need no certificate of their own.
    pub fn start_tls() -> Self {
        let dir =
            std::env::temp_dir().join(format!("polysocket-redis-tls-{}-{}", std::process::id(), crate::free_port()));
        std::fs::create_dir_all(&dir).expect("TLS folder");
        let made_up = crate::LocalhostCertificate::new("polysocket test Redis CA");
        let files = [
            ("ca.pem", made_up.ca.pem()),
            ("server.pem", made_up.cert.pem()),
            ("server.key", made_up.key.serialize_pem()),
        ];
        for (name, pem) in files {
            std::fs::write(dir.join(name), pem).expect("write TLS file");
        }
        let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let extra = vec![
            "--tls-cert-file".into(),
            file("server.pem"),
            "--tls-key-file".into(),
            file("server.key"),
            "--tls-ca-cert-file".into(),
            file("ca.pem"),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        Self::start_with(extra, Some(dir))
    }

    /// A replica of `primary`, as Sentinel promotes on a failover. A
    /// replica stores what it syncs: in a folder of its own, removed with it.
    pub fn start_replica_of(primary: &RedisServer) -> Self {
        let dir =
            std::env::temp_dir().join(format!("polysocket-replica-{}-{}", std::process::id(), crate::free_port()));
        std::fs::create_dir_all(&dir).expect("replica folder");
        let mut replica = Self::start_with(
            vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                primary.port.to_string(),
                "--dir".into(),
                dir.to_string_lossy().into_owned(),
            ],
            None,
        );
        replica.scratch = Some(dir);
        replica
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn start_with(extra: Vec<String>, tls: Option<PathBuf>) -> Self {
        let mut server = RedisServer { port: crate::free_port(), child: None, extra, tls, scratch: None };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://localhost:<port>` over TLS.
    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("rediss://localhost:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The CA that signed a TLS server's certificate (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.tls.as_ref().expect("a TLS server").join("ca.pem")
    }

    /// Kills the server (as a crash would: no shutdown, no save).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again, empty, on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port.to_string();
        let listen = match self.tls {
            Some(_) => vec!["--port", "0", "--tls-port", &port],
            None => vec!["--port", &port],
        };
        let child = Command::new("redis-server")
            .args(listen)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (see .ci/run)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.is_up() {
            assert!(Instant::now() < deadline, "redis-server on port {} did not come up", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Plain servers answer PING (with or without a password: an ACL error
    /// is an answer too); TLS servers accept connections.
    fn is_up(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        if self.tls.is_some() {
            return true;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 1];
        stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        for dir in self.tls.iter().chain(&self.scratch) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A Redis Sentinel (`redis-server --sentinel`) watching a primary as
/// `service`, quick to act: the primary counts as down after 1 s.
pub struct Sentinel {
    port: u16,
    child: Child,
    config: PathBuf,
}

impl Sentinel {
    /// Starts it with a quorum of two (for three sentinels).
    pub fn start(service: &str, primary: &RedisServer) -> Self {
        let port = crate::free_port();
        // A sentinel rewrites its configuration file as it learns the topology.
        let config = std::env::temp_dir().join(format!("polysocket-sentinel-{}-{port}.conf", std::process::id()));
        let text = format!(
            "port {port}\nbind 127.0.0.1\nsentinel monitor {service} 127.0.0.1 {primary} 2\n\
             sentinel down-after-milliseconds {service} 1000\nsentinel failover-timeout {service} 5000\n",
            primary = primary.port
        );
        std::fs::write(&config, text).expect("sentinel configuration");
        let child = Command::new("redis-server")
            .arg(&config)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (see .ci/run)");
        let sentinel = Sentinel { port, child, config };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sentinel on port {port} did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        sentinel
    }

    /// `host:port`, as a `redis+sentinel://` URL lists it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// A Redis Cluster of three primaries (no replicas), each a `redis-server`
/// of its own, slots spread by `redis-cli --cluster create`.
pub struct RedisCluster {
    nodes: Vec<Child>,
    ports: Vec<u16>,
    dir: PathBuf,
}

impl RedisCluster {
    pub fn start() -> Self {
        let ports: Vec<u16> = (0..3).map(|_| crate::free_port()).collect();
        let dir = std::env::temp_dir().join(format!("polysocket-cluster-{}-{}", std::process::id(), ports[0]));
        std::fs::create_dir_all(&dir).expect("cluster folder");
        let nodes = ports
            .iter()
            .map(|port| {
                Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                    .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                    .arg("--cluster-config-file")
                    .arg(dir.join(format!("nodes-{port}.conf")))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("redis-server must be installed (see .ci/run)")
            })
            .collect();
        let cluster = RedisCluster { nodes, ports, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in &cluster.ports {
            while TcpStream::connect(("127.0.0.1", *port)).is_err() {
                assert!(Instant::now() < deadline, "cluster node on port {port} did not come up");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(cluster.ports.iter().map(|port| format!("127.0.0.1:{port}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed (with redis-server)");
        assert!(created.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&created.stdout));
        cluster
    }

    /// `redis+cluster://` with every node.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    pub fn ports(&self) -> &[u16] {
        &self.ports
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
