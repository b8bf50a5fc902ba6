//! The real `router` and `polysocketd` binaries as child processes, for the
//! tests that kill, stop and restart parts of a fleet.
//!
//! The binaries are the ones `cargo test --workspace` builds next to the test
//! executables (the router and polysocketd packages have integration tests of
//! their own, so cargo builds their binaries before running any test).

use crate::http::Http;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running service, killed when dropped.
pub struct Process {
    child: Child,
    pub http: Http,
    pub port: u16,
}

/// Where cargo put the workspace's binary `name` for this build profile.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let path = exe.parent().and_then(|deps| deps.parent()).expect("target dir").join(name);
    assert!(path.exists(), "{} is missing: run `cargo test --workspace` (or `cargo build --bins`)", path.display());
    path
}

impl Process {
    /// Starts `binary` with `args`, listening on `port`. Logs go to the
    /// test's output when `TEST_LOG` is set.
    pub fn start(name: &str, port: u16, args: &[&str]) -> Process {
        match std::env::var("TEST_LOG") {
            Ok(level) => Self::spawn(name, port, args, &level, Stdio::inherit()),
            Err(_) => Self::spawn(name, port, args, "off", Stdio::null()),
        }
    }

    /// Starts `binary` logging everything (`RUST_LOG=debug`) to `log`.
    pub fn start_logging_to(name: &str, port: u16, args: &[&str], log: &std::path::Path) -> Process {
        Self::start_logging_at(name, port, args, log, "debug")
    }

    /// Starts `binary` logging at `level` (as `RUST_LOG`) to `log`.
    pub fn start_logging_at(name: &str, port: u16, args: &[&str], log: &std::path::Path, level: &str) -> Process {
        let file = std::fs::File::create(log).expect("log file");
        Self::spawn(name, port, args, level, Stdio::from(file))
    }

    /// The process's resident memory, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status")
    }

    fn spawn(name: &str, port: u16, args: &[&str], level: &str, stderr: Stdio) -> Process {
        let child = Command::new(binary(name))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("RUST_LOG", level)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Process { child, http: Http::new(port), port }
    }

    /// Sends SIGKILL: a crash, nothing cleaned up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM, as Kubernetes does to stop a pod.
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// Freezes the process (SIGSTOP): alive but silent, like a hung daemon.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen process run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.child.id().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill {signal} failed");
    }

    /// Waits up to `within` for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
