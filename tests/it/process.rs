//! Running the real binary: start `serve` with a config file, find its address in its
//! JSON logs, stop it with a signal.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_wechat-token-server");

/// A running `wechat-token-server serve`.
pub struct Server {
    child: Child,
    pub base: String,
    /// Everything it wrote to stderr so far.
    pub logs: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `serve --config <config>` and waits for its "serving" log line.
    pub async fn start(config: &Path) -> Self {
        Self::start_with(config, &[]).await
    }

    /// Like [`start`](Self::start), with more arguments to `serve`.
    pub async fn start_with(config: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args([
                "--log-format",
                "json",
                "--log-level",
                "info",
                "serve",
                "--config",
            ])
            .arg(config)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut addr_tx = Some(addr_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Kept before the address is handed over, so that a test reading the
                // logs once the server has started finds the "serving" line in them.
                {
                    let mut logs = sink.lock().unwrap_or_else(|e| e.into_inner());
                    logs.push_str(&line);
                    logs.push('\n');
                }
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
                    && event["message"] == "serving"
                    && let (Some(tx), Some(addr)) = (addr_tx.take(), event["addr"].as_str())
                {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let addr = tokio::time::timeout(Duration::from_secs(20), addr_rx)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no 'serving' line within 20 s; logs:\n{}",
                    logs.lock().unwrap()
                )
            })
            .unwrap_or_else(|_| panic!("server exited; logs:\n{}", logs.lock().unwrap()));
        Self {
            child,
            base: format!("http://{addr}"),
            logs,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then wait for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let waited = tokio::task::spawn_blocking(move || self.child.wait().unwrap());
        tokio::time::timeout(Duration::from_secs(15), waited)
            .await
            .expect("exits after SIGTERM")
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
