//! The set of apps and their credentials, which changes at runtime (the app registry,
//! a config reload) while every request reads it.
//!
//! Readers load the current [`Catalog`] from an `ArcSwap`: no lock, no shared
//! reference count touched on the serving path, so a change never pauses serving. A
//! change builds a new catalog beside the old one and swaps it in. Entries are shared
//! between catalogs (`Arc`), so a change costs one pointer copy per app, not a copy of
//! the apps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Credential;
use super::issued::IssuedTokens;
use crate::config::{AppConfig, Preset};

/// Where an app is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The config file: changed only by editing it.
    Config,
    /// The runtime registry (`/v1/apps`), kept in the store.
    Registry,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Config => "config",
            Origin::Registry => "registry",
        }
    }
}

/// One app: its definition and its credentials.
pub struct AppEntry {
    pub config: AppConfig,
    pub origin: Origin,
    /// Its credentials in dependency order (each after those it refers to).
    pub creds: Vec<Arc<Credential>>,
    /// Stops this app's flight tasks (a child of the refresher's root token).
    pub(super) stop: CancellationToken,
    /// The flight tasks, awaited when the app is removed so that its tokens are
    /// deleted from the store only once nothing can store them again.
    pub(super) tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl AppEntry {
    /// `stop`: a child of the refresher's root token, so that both a shutdown and the
    /// app's removal stop its tasks.
    pub(super) fn new(
        config: AppConfig,
        origin: Origin,
        stop: CancellationToken,
        issued: &Arc<IssuedTokens>,
    ) -> Self {
        let creds = config
            .sources
            .iter()
            .map(|source| {
                let cred = Arc::new(Credential::of_generation(
                    &config.name,
                    source.clone(),
                    config.generation.clone(),
                ));
                cred.attach_index(issued);
                cred
            })
            .collect();
        Self {
            config,
            origin,
            creds,
            stop,
            tasks: Mutex::new(Vec::new()),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// What the app is on WeChat, for presets (`[apps.NAME]` and registry apps).
    pub fn preset(&self) -> Option<&Preset> {
        self.config.preset.as_ref()
    }

    /// Stops this app's flight tasks and waits for them to end (each after the flight
    /// under way).
    pub async fn stop_tasks(&self) {
        self.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }

    /// The credential `name`. A linear scan: an app has one to three tokens.
    pub fn credential(&self, name: &str) -> Option<&Arc<Credential>> {
        self.creds.iter().find(|c| c.key.name == name)
    }
}

/// Every app, as of one moment.
#[derive(Default)]
pub struct Catalog {
    apps: HashMap<Arc<str>, Arc<AppEntry>>,
    /// Config apps in config order, then registry apps by name.
    ordered: Vec<Arc<AppEntry>>,
    /// How many credentials all apps have.
    credential_count: usize,
}

impl Catalog {
    /// A catalog of `entries`, ordered as [`apps`](Self::apps) says.
    pub(super) fn new(entries: impl IntoIterator<Item = Arc<AppEntry>>) -> Self {
        let mut config = Vec::new();
        let mut registry = Vec::new();
        for entry in entries {
            match entry.origin {
                Origin::Config => config.push(entry),
                Origin::Registry => registry.push(entry),
            }
        }
        registry.sort_by(|a, b| a.name().cmp(b.name()));
        let ordered: Vec<Arc<AppEntry>> = config.into_iter().chain(registry).collect();
        Self {
            apps: ordered
                .iter()
                .map(|e| (Arc::from(e.name()), e.clone()))
                .collect(),
            credential_count: ordered.iter().map(|e| e.creds.len()).sum(),
            ordered,
        }
    }

    /// A copy with `entry` added, or in place of the app of that name. Linear in the
    /// number of apps (pointer copies), so that registering thousands of apps one by
    /// one stays cheap.
    pub(super) fn with(&self, entry: Arc<AppEntry>) -> Self {
        let mut next = self.without(entry.name());
        let at = match entry.origin {
            Origin::Config => next
                .ordered
                .iter()
                .position(|e| e.origin == Origin::Registry)
                .unwrap_or(next.ordered.len()),
            Origin::Registry => {
                let registry = next
                    .ordered
                    .iter()
                    .position(|e| e.origin == Origin::Registry)
                    .unwrap_or(next.ordered.len());
                registry + next.ordered[registry..].partition_point(|e| e.name() < entry.name())
            }
        };
        next.credential_count += entry.creds.len();
        next.apps.insert(Arc::from(entry.name()), entry.clone());
        next.ordered.insert(at, entry);
        next
    }

    /// A copy without the app `name`.
    pub(super) fn without(&self, name: &str) -> Self {
        let mut apps = self.apps.clone();
        let mut ordered = self.ordered.clone();
        let mut credential_count = self.credential_count;
        if let Some(removed) = apps.remove(name) {
            ordered.retain(|e| !Arc::ptr_eq(e, &removed));
            credential_count -= removed.creds.len();
        }
        Self {
            apps,
            ordered,
            credential_count,
        }
    }

    /// The app `name`.
    pub fn app(&self, name: &str) -> Option<&Arc<AppEntry>> {
        self.apps.get(name)
    }

    /// The credential `app`/`name`.
    pub fn credential(&self, app: &str, name: &str) -> Option<&Arc<Credential>> {
        self.apps.get(app)?.credential(name)
    }

    /// Every app: config apps in config order, then registry apps by name.
    pub fn apps(&self) -> &[Arc<AppEntry>] {
        &self.ordered
    }

    /// Every credential, apps in [`apps`](Self::apps) order, each app's in dependency
    /// order.
    pub fn credentials(&self) -> impl Iterator<Item = &Arc<Credential>> {
        self.ordered.iter().flat_map(|e| e.creds.iter())
    }

    /// How many credentials there are.
    pub fn credential_count(&self) -> usize {
        self.credential_count
    }

    /// How many apps there are.
    pub fn len(&self) -> usize {
        self.ordered.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ordered.is_empty()
    }
}
