//! A private `redis-server` per test, on a free loopback port, never a shared one.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running redis-server without persistence: a restart comes back empty.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    pub async fn start() -> Self {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if let Some(server) = Self::start_on(port).await {
                return server;
            }
        }
        panic!("could not start redis-server on a free port");
    }

    /// Starts on `port`; `None` if it did not come up (port taken meanwhile).
    pub async fn start_on(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--dir", &std::env::temp_dir().display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run scripts/test.sh, which installs it");
        let mut server = Self {
            child: Some(child),
            port,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            if server.cli(&["PING"]).await.trim() == "PONG" {
                // Ours, not another test's server that took the port first.
                let info = server.cli(&["INFO", "server"]).await;
                let pid = server.child.as_ref().map(Child::id);
                let answering = info
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("process_id:"))
                    .and_then(|p| p.parse::<u32>().ok());
                if answering == pid {
                    return Some(server);
                }
                server.kill();
                return None;
            }
            if let Some(child) = server.child.as_mut()
                && child.try_wait().ok().flatten().is_some()
            {
                server.child = None;
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Runs redis-cli against this server and returns its output.
    pub async fn cli(&self, args: &[&str]) -> String {
        let output = tokio::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .await
            .expect("redis-cli runs");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// SIGSTOP or SIGCONT: a Redis that hangs (requests queue up unanswered, then run
    /// all at once on SIGCONT).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGKILL: gone at once, and with no persistence it restarts empty.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts an empty one on the same port.
    pub async fn restart_empty(&mut self) {
        self.kill();
        for _ in 0..50 {
            if let Some(mut server) = Self::start_on(self.port).await {
                self.child = server.child.take();
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("could not restart redis-server on port {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
