//! Reloading the config file while serving (SIGHUP, `POST /v1/reload`, the `reload`
//! command): apps added, changed or removed, clients replaced; the tokens of unchanged
//! apps untouched. A file that does not load is logged and the old config kept, whole.
//!
//! Settings that shape the running process (the listen address, the store, refresh
//! timing, the quota guard, inbound limits) take effect at the next restart; a reload
//! that changes them says so in its answer and its log line.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::config::{AppConfig, Config};
use crate::domain::CredentialKey;
use crate::refresh::{Origin, Refresher};
use crate::registry::Registry;
use crate::server::Tls;

/// What a reload changed.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub apps_added: Vec<String>,
    pub apps_changed: Vec<String>,
    pub apps_removed: Vec<String>,
    /// How many `[clients.NAME]` there are now.
    pub clients: usize,
    /// Settings that changed but take effect only at the next restart.
    pub restart_needed: Vec<String>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("this server was started without a config file; nothing to reload")]
    NoFile,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the store failed during the reload: {0}")]
    Store(#[from] crate::store::Error),
}

/// Applies new versions of the config file.
pub struct Reloader {
    path: Mutex<Option<PathBuf>>,
    current: Mutex<Config>,
    refresher: Arc<Refresher>,
    registry: Arc<Registry>,
    auth: Arc<ArcSwap<Auth>>,
    /// The HTTPS certificate, read again from its files on every reload (a renewed
    /// certificate is picked up without a restart).
    tls: Option<Arc<Tls>>,
    /// One reload at a time.
    running: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub fn new(
        config: Config,
        refresher: Arc<Refresher>,
        registry: Arc<Registry>,
        auth: Arc<ArcSwap<Auth>>,
        tls: Option<Arc<Tls>>,
    ) -> Self {
        Self {
            path: Mutex::new(None),
            current: Mutex::new(config),
            refresher,
            registry,
            auth,
            tls,
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// The file to read again on a reload.
    pub fn set_path(&self, path: PathBuf) {
        *self.path.lock().unwrap_or_else(|e| e.into_inner()) = Some(path);
    }

    /// Reads the config file again and applies it; on any error nothing changes.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn reload(&self) -> Result<Summary, Error> {
        let _one = self.running.lock().await;
        let path = self
            .path
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(Error::NoFile)?;
        let new = Config::load(&path).map_err(|e| {
            Error::Invalid(format!(
                "{}: {e}; the running config is kept",
                path.display()
            ))
        })?;
        let old = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for app in &new.apps {
            if old.app(&app.name).is_none() && self.registry.has(&app.name).await {
                return Err(Error::Conflict(format!(
                    "apps.{}: a registry app has this name; DELETE /v1/apps/{} first (the running config is kept)",
                    app.name, app.name
                )));
            }
        }
        // The certificate first: a bad one refuses the whole reload.
        if let (Some(tls), Some(files)) = (&self.tls, &new.server.tls) {
            tls.reload(files).map_err(|e| {
                Error::Invalid(format!(
                    "server.tls_cert / server.tls_key: {e}; the running config is kept"
                ))
            })?;
        }
        let mut summary = Summary {
            clients: new.clients.len(),
            restart_needed: restart_needed(&old, &new),
            ..Summary::default()
        };
        self.registry
            .set_config_apps(new.apps.iter().map(|a| a.name.clone()).collect());
        self.registry.set_components(&new);
        // Who may call changes first: a removed client must not keep a removed app's
        // access while the apps change.
        self.auth.store(Arc::new(Auth::from_config(&new)));
        let names: HashSet<&str> = new.apps.iter().map(|a| a.name.as_str()).collect();
        for app in old.apps.iter().filter(|a| !names.contains(a.name.as_str())) {
            if let Some(entry) = self.refresher.remove_app(&app.name) {
                self.refresher.retire(&entry).await?;
            }
            summary.apps_removed.push(app.name.clone());
        }
        for app in &new.apps {
            match old.app(&app.name) {
                Some(before) if same_definition(before, app) => {}
                Some(before) => {
                    self.replace(before, app.clone()).await?;
                    summary.apps_changed.push(app.name.clone());
                }
                None => {
                    self.refresher.add_app(app.clone(), Origin::Config).await?;
                    summary.apps_added.push(app.name.clone());
                }
            }
        }
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = new;
        tracing::info!(
            added = ?summary.apps_added,
            changed = ?summary.apps_changed,
            removed = ?summary.apps_removed,
            clients = summary.clients,
            restart_needed = ?summary.restart_needed,
            "config reloaded"
        );
        Ok(summary)
    }

    /// Puts the changed `app` in place of `before`: the old one stops, its tokens are
    /// deleted (they may be another account's), and the new one fetches its own.
    async fn replace(&self, before: &AppConfig, app: AppConfig) -> Result<(), Error> {
        if let Some(entry) = self.refresher.remove_app(&before.name) {
            self.refresher.retire(&entry).await?;
        }
        for source in &app.sources {
            self.refresher
                .store()
                .delete(&CredentialKey::new(&app.name, &source.name))
                .await?;
        }
        self.refresher.add_app(app, Origin::Config).await?;
        Ok(())
    }

    /// Reloads on every SIGHUP until `cancel`.
    pub fn spawn_on_sighup(self: &Arc<Self>, tracker: &TaskTracker, cancel: &CancellationToken) {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut hangups = match signal(SignalKind::hangup()) {
                Ok(hangups) => hangups,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGHUP; reload with POST /v1/reload");
                    return;
                }
            };
            let (reloader, cancel) = (self.clone(), cancel.clone());
            tracker.spawn(async move {
                loop {
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        received = hangups.recv() => {
                            if received.is_none() {
                                return;
                            }
                            tracing::info!("SIGHUP received: reloading the config file");
                            if let Err(error) = reloader.reload().await {
                                tracing::error!(%error, "config not reloaded");
                            }
                        }
                    }
                }
            });
        }
    }
}

/// Are two definitions of an app the same? Compared whole (URLs, arguments, secrets):
/// any change makes new tokens. (`Debug` shows every field; it is only compared, never
/// logged.)
fn same_definition(a: &AppConfig, b: &AppConfig) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// The settings that differ between `old` and `new` and apply only at a restart.
fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut keys = Vec::new();
    let mut check = |key: &str, same: bool| {
        if !same {
            keys.push(key.to_owned());
        }
    };
    check("server.bind", old.server.bind == new.server.bind);
    check(
        "server.tls_cert",
        old.server.tls.is_some() == new.server.tls.is_some(),
    );
    check(
        "server.trusted_proxies",
        old.server.trusted_proxies == new.server.trusted_proxies,
    );
    check(
        "server.max_connections",
        old.server.max_connections == new.server.max_connections,
    );
    check(
        "server.shutdown_timeout",
        old.server.shutdown_timeout == new.server.shutdown_timeout,
    );
    check(
        "server.header_read_timeout",
        old.server.header_read_timeout == new.server.header_read_timeout,
    );
    check(
        "server.idle_timeout",
        old.server.idle_timeout == new.server.idle_timeout,
    );
    check(
        "store",
        format!("{:?}", old.store) == format!("{:?}", new.store)
            && old.store.redis_url.expose() == new.store.redis_url.expose()
            && old.store.encryption_key == new.store.encryption_key,
    );
    check(
        "refresh",
        format!("{:?}", old.refresh) == format!("{:?}", new.refresh),
    );
    check("quota", old.quota == new.quota);
    keys
}

/// The pid file of `serve --pid-file`, removed when dropped (on exit).
pub struct PidFile(PathBuf);

impl PidFile {
    /// Writes this process's id to `path`.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write(path: PathBuf) -> anyhow::Result<Self> {
        use anyhow::Context;
        std::fs::write(&path, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write the pid file {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `wechat-token-server reload`: SIGHUP to the pid file's process, or
/// `POST {url}/v1/reload`; returns what to print.
///
/// # Errors
/// When the pid file cannot be read or the process signalled; when the server cannot be
/// reached or refuses the reload (its message says why).
pub async fn send(args: &crate::cli::ReloadArgs) -> anyhow::Result<String> {
    use anyhow::{Context, bail};
    if let Some(path) = &args.pid_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the pid file {}", path.display()))?;
        let pid: u32 = text
            .trim()
            .parse()
            .with_context(|| format!("{} does not hold a process id", path.display()))?;
        // `kill` rather than a signal call: this crate forbids unsafe code.
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .context("cannot run kill")?;
        if !status.success() {
            bail!(
                "cannot signal process {pid} (from {}): is it running?",
                path.display()
            );
        }
        return Ok(format!(
            "sent SIGHUP to {pid}; the server logs what it reloaded"
        ));
    }
    let url = args
        .url
        .as_deref()
        .unwrap_or_default()
        .trim_end_matches('/');
    let secret = args.secret.as_deref().context(
        "--url needs --secret (or WTS_REQUEST_SECRET): the request secret or an admin client's key",
    )?;
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/reload"))
        .bearer_auth(secret)
        .timeout(std::time::Duration::from_secs(60))
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{url} refused the reload ({status}): {body}");
    }
    Ok(body)
}
