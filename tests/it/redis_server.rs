//! A private `redis-server` per test, on a free loopback port, never a shared one; and
//! the highly available shapes made of them: TLS, one master with a replica watched by
//! three sentinels, a three-master Redis Cluster.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running redis-server without persistence: a restart comes back empty.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// Arguments the server was started with (after the port), to restart it alike.
    args: Vec<String>,
    /// Arguments redis-cli needs to talk to it (TLS).
    cli_args: Vec<String>,
}

/// A free loopback port (free now: a server started on it may still lose a race).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts with more `redis-server` arguments, on a free port.
    pub async fn start_with(args: &[&str]) -> Self {
        for _ in 0..5 {
            if let Some(server) = Self::spawn("redis-server", free_port(), args, &[]).await {
                return server;
            }
        }
        panic!("could not start redis-server on a free port");
    }

    /// Starts `program` (`redis-server`, or `redis-sentinel` with a config file first
    /// in `args`) on `port`; `None` if it did not come up.
    async fn spawn(program: &str, port: u16, args: &[&str], cli_args: &[&str]) -> Option<Self> {
        let mut command = Command::new(program);
        if program == "redis-sentinel" {
            command.arg(args[0]).args(["--port", &port.to_string()]);
            command.args(&args[1..]);
        } else {
            command.args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]);
            command.args(["--dir", &std::env::temp_dir().display().to_string()]);
            command.args(args);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run scripts/test.sh, which installs it");
        let mut server = Self {
            child: Some(child),
            port,
            args: args.iter().map(|a| a.to_string()).collect(),
            cli_args: cli_args.iter().map(|a| a.to_string()).collect(),
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
            .args(&self.cli_args)
            .args(args)
            .output()
            .await
            .expect("redis-cli runs");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// SIGSTOP or SIGCONT: a Redis that hangs (requests queue up unanswered, then run
    /// all at once on SIGCONT).
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
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
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let cli: Vec<&str> = self.cli_args.iter().map(String::as_str).collect();
        for _ in 0..50 {
            if let Some(mut server) = Self::spawn("redis-server", self.port, &args, &cli).await {
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

/// A redis-server speaking TLS only, with a certificate of a throwaway CA.
pub struct TlsRedis {
    pub server: RedisServer,
    /// The PEM file of the CA that signed the server's certificate.
    pub ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = crate::certs::make_certs(dir.path(), "redis");
        let (ca_s, cert_s, key_s) = (
            ca.display().to_string(),
            cert.display().to_string(),
            key.display().to_string(),
        );
        for _ in 0..5 {
            let port = free_port().to_string();
            let args = [
                "--port",
                "0",
                "--tls-port",
                &port,
                "--tls-cert-file",
                &cert_s,
                "--tls-key-file",
                &key_s,
                "--tls-ca-cert-file",
                &ca_s,
                "--tls-auth-clients",
                "no",
            ];
            let cli = ["--tls", "--cacert", &ca_s];
            // `--port 0` after ours: the plain port is off, the TLS port is `port`.
            if let Some(server) =
                RedisServer::spawn("redis-server", port.parse().unwrap(), &args, &cli).await
            {
                return Self {
                    server,
                    ca,
                    _dir: dir,
                };
            }
        }
        panic!("could not start a TLS redis-server");
    }

    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.server.port)
    }
}

/// Name of the master the sentinels watch.
pub const MASTER_NAME: &str = "wtsmaster";

/// One master, one replica of it, three sentinels (quorum 2) on free ports, with fast
/// failure detection (1 s) so that a failover completes within seconds.
pub struct SentinelSet {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinels: Vec<RedisServer>,
    _dir: tempfile::TempDir,
}

impl SentinelSet {
    pub async fn start() -> Self {
        let master = RedisServer::start().await;
        let master_port = master.port.to_string();
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &master_port]).await;
        let dir = tempfile::tempdir().unwrap();
        let mut sentinels = Vec::new();
        while sentinels.len() < 3 {
            let port = free_port();
            let file = dir.path().join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &file,
                format!(
                    "bind 127.0.0.1\nsentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 10000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n"
                ),
            )
            .unwrap();
            let file = file.display().to_string();
            if let Some(sentinel) = RedisServer::spawn("redis-sentinel", port, &[&file], &[]).await
            {
                sentinels.push(sentinel);
            }
        }
        let set = Self {
            master,
            replica,
            sentinels,
            _dir: dir,
        };
        // Ready for a failover: the replica is in sync, and every sentinel knows the
        // replica and the two other sentinels.
        crate::helpers::wait_until(
            "the sentinel set is ready",
            Duration::from_secs(20),
            || async {
                let link = set.replica.cli(&["INFO", "replication"]).await;
                if !link.contains("master_link_status:up") {
                    return false;
                }
                for sentinel in &set.sentinels {
                    let info = sentinel.cli(&["SENTINEL", "MASTER", MASTER_NAME]).await;
                    let field = |name: &str| {
                        let lines: Vec<&str> = info.lines().collect();
                        lines
                            .iter()
                            .position(|l| *l == name)
                            .and_then(|i| lines.get(i + 1))
                            .and_then(|v| v.parse::<u32>().ok())
                    };
                    if field("num-slaves") != Some(1) || field("num-other-sentinels") != Some(2) {
                        return false;
                    }
                }
                true
            },
        )
        .await;
        set
    }

    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis-sentinel://{}/0#{MASTER_NAME}", hosts.join(","))
    }

    /// The port of the master the sentinels name now.
    pub async fn master_port(&self) -> Option<u16> {
        for sentinel in &self.sentinels {
            let out = sentinel
                .cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME])
                .await;
            if let Some(port) = out.lines().nth(1).and_then(|p| p.trim().parse().ok()) {
                return Some(port);
            }
        }
        None
    }
}

/// A Redis Cluster of three masters without replicas, on free ports.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        while nodes.len() < 3 {
            let port = free_port();
            let conf = dir.path().join(format!("nodes-{port}.conf"));
            let conf = conf.display().to_string();
            let args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &conf,
                "--cluster-node-timeout",
                "2000",
            ];
            if let Some(node) = RedisServer::spawn("redis-server", port, &args, &[]).await {
                nodes.push(node);
            }
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = tokio::process::Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .await
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Self { nodes, _dir: dir };
        crate::helpers::wait_until(
            "the Redis Cluster is ok",
            Duration::from_secs(20),
            || async {
                for node in &cluster.nodes {
                    if !node
                        .cli(&["CLUSTER", "INFO"])
                        .await
                        .contains("cluster_state:ok")
                    {
                        return false;
                    }
                }
                true
            },
        )
        .await;
        cluster
    }

    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis-cluster://{}", hosts.join(","))
    }

    /// Runs redis-cli in cluster mode (`-c`, following redirections) on the first node.
    pub async fn cli(&self, args: &[&str]) -> String {
        let mut full = vec!["-c"];
        full.extend(args);
        self.nodes[0].cli(&full).await
    }
}
