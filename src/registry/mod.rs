//! The runtime app registry: apps added, replaced and removed over HTTP (`/v1/apps`)
//! beside those of the config file, kept in the store (the embedded store keeps them
//! across restarts; with Redis every instance of a cluster follows them within
//! [`FOLLOW_INTERVAL`] and a bit).
//!
//! - [`spec`]: a definition (the keys of an `[apps.NAME]` table, as JSON) and its
//!   stored record.
//! - [`seal`]: secrets sealed at rest with `store.encryption_key`.
//!
//! Tokens are stored with a digest of their app's definition (`generation`): a token
//! fetched for an earlier definition (another appid under the same name, say) is never
//! served for a later one, on any instance, even after a crash between the steps of a
//! change; it is written over by the new definition's first fetch.

pub mod seal;
pub mod spec;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::config::component::ComponentConfig;
use crate::held::HeldValue;
use crate::refresh::{AppEntry, HeldStore, Origin, Refresher};
use crate::store::{self, StoredApp, TokenStore};
use seal::Sealer;

/// How often an instance on a shared store checks whether the registry changed (one
/// small read): a change made on one instance is served by all within about this.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// How long after a removal its tokens are deleted from a shared store: every
/// instance has stopped refreshing the app by then.
pub const RETIRE_DELAY: Duration = Duration::from_secs(3);

/// Most apps one `GET /v1/apps` page lists.
pub const MAX_PAGE: usize = 1000;

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Created,
    Replaced,
    /// The same definition was already in place: nothing changed.
    Unchanged,
}

/// Why a registry request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
    /// The name is the config file's, or the change is refused by this server's setup.
    #[error("{0}")]
    Conflict(String),
    #[error("no app {0:?}")]
    NotFound(String),
    #[error("the store failed: {0}")]
    Store(#[from] store::Error),
}

/// The registry of one instance.
pub struct Registry {
    refresher: Arc<Refresher>,
    store: Arc<dyn TokenStore>,
    sealer: Option<Sealer>,
    /// Does the store leave secrets outside this host (Redis)? Then they must be
    /// sealed.
    needs_key: bool,
    /// Apps of the config file: the registry may not define these names.
    config_apps: std::sync::RwLock<HashSet<String>>,
    /// The config file's Open Platform apps, which authorizers are built with.
    components: std::sync::RwLock<HashMap<String, Arc<ComponentConfig>>>,
    /// What this instance holds, changed one request (or follow step) at a time.
    state: tokio::sync::Mutex<Known>,
}

/// The registry as this instance last applied it.
#[derive(Default)]
struct Known {
    /// App name -> its definition (secrets in the clear; never shown).
    definitions: HashMap<String, Value>,
    /// The store's registry revision last applied.
    revision: u64,
}

impl Registry {
    pub fn new(config: &Config, refresher: Arc<Refresher>) -> Self {
        let store = refresher.store().clone();
        Self {
            needs_key: store.is_shared(),
            sealer: config.store.encryption_key.as_ref().map(Sealer::new),
            config_apps: std::sync::RwLock::new(
                config.apps.iter().map(|a| a.name.clone()).collect(),
            ),
            components: std::sync::RwLock::new(components_of(config)),
            store,
            refresher,
            state: tokio::sync::Mutex::new(Known::default()),
        }
    }

    /// Is `name` an app of the config file?
    fn is_config_app(&self, name: &str) -> bool {
        self.config_apps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }

    /// Is `name` an app of the registry?
    pub async fn has(&self, name: &str) -> bool {
        self.state.lock().await.definitions.contains_key(name)
    }

    /// The config file's apps are now `names` (after a reload).
    pub fn set_config_apps(&self, names: HashSet<String>) {
        *self.config_apps.write().unwrap_or_else(|e| e.into_inner()) = names;
    }

    /// The config file's Open Platform apps are now those of `config` (after a
    /// reload); authorizers added from now on are built with them.
    pub fn set_components(&self, config: &Config) {
        *self.components.write().unwrap_or_else(|e| e.into_inner()) = components_of(config);
    }

    /// The Open Platform app `name` of the config file.
    pub fn component(&self, name: &str) -> Option<Arc<ComponentConfig>> {
        self.components
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    fn parse(
        &self,
        name: &str,
        definition: &Value,
    ) -> Result<crate::config::AppConfig, spec::Invalid> {
        spec::parse(name, definition, &|platform| self.component(platform))
    }

    /// Loads the registry from the store and adds its apps (at start-up, before the
    /// stored tokens are restored). A record that cannot be read (sealed with another
    /// key, a name the config now defines) is skipped with an error in the log, and
    /// left in the store. Returns how many apps were added.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn load(&self) -> Result<usize, store::Error> {
        let mut known = self.state.lock().await;
        known.revision = self.store.apps_revision().await?;
        let records = self.store.load_apps().await?;
        let mut apps = Vec::new();
        for record in records {
            if let Some((definition, app)) = self.read_record(&record) {
                known.definitions.insert(record.name.clone(), definition);
                apps.push(app);
            }
        }
        let added = apps.len();
        self.refresher.add_apps_at_start(apps);
        Ok(added)
    }

    /// A stored record as a definition and its app, or `None` (logged) when it cannot
    /// be used.
    fn read_record(&self, record: &StoredApp) -> Option<(Value, crate::config::AppConfig)> {
        let name = &record.name;
        if self.is_config_app(name) {
            tracing::error!(app = %name, "the registry defines an app that the config file defines too; the config file's is used");
            return None;
        }
        let definition = match spec::decode(name, &record.record, self.sealer.as_ref()) {
            Ok(definition) => definition,
            Err(problem) => {
                tracing::error!(app = %name, %problem, "cannot read a registry app; it is not served");
                return None;
            }
        };
        match self.parse(name, &definition) {
            Ok(app) => Some((definition, app)),
            Err(problem) => {
                tracing::error!(app = %name, %problem, "a registry app is no longer valid; it is not served");
                None
            }
        }
    }

    /// Adds or replaces the registry app `name`; returns what was done and the app as
    /// shown.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the field at fault; [`Error::Conflict`] for a name of
    /// the config file, or secrets that this store may not keep unsealed;
    /// [`Error::Store`].
    pub async fn put(&self, name: &str, definition: Value) -> Result<(Put, Value), Error> {
        let app = self
            .parse(name, &definition)
            .map_err(|e| Error::Invalid(e.0))?;
        if self.is_config_app(name) {
            return Err(Error::Conflict(format!(
                "app {name:?} is defined in the config file; change it there"
            )));
        }
        if self.needs_key && self.sealer.is_none() && spec::has_secret(&definition) {
            return Err(Error::Conflict(format!(
                "the {} store is shared, and app secrets are kept in it only sealed: set store.encryption_key (32 bytes, e.g. openssl rand -hex 32) on every instance",
                self.store.backend()
            )));
        }
        let mut known = self.state.lock().await;
        let put = match known.definitions.get(name) {
            Some(current) if *current == definition => Put::Unchanged,
            Some(_) => Put::Replaced,
            None => Put::Created,
        };
        if put == Put::Replaced
            && let Some(entry) = self.refresher.app(name)
            && entry.config.generation == app.generation
            && !entry.config.held.is_empty()
            && !failing(&entry)
        {
            // Only a held value changed (an authorizer's refresh token imported
            // again): stored, and used by the running app without a restart. An app
            // whose refreshes fail (a refused refresh token waits the slow retry of
            // errors that need a person) is restarted instead, so that the new
            // token is tried at once.
            self.save(name, &definition).await?;
            spec::apply_held(&definition, &entry.config);
            known
                .definitions
                .insert(name.to_owned(), definition.clone());
            tracing::info!(app = %name, "registry app's refresh token updated");
            return Ok((put, shown(name, Some(&entry), Some(&definition))));
        }
        if put != Put::Unchanged {
            // The old app stops first (its flights end), so that it stores nothing
            // after the new definition is in place.
            if let Some(old) = self.refresher.remove_app(name) {
                old.stop_tasks().await;
            }
            self.save(name, &definition).await?;
            known
                .definitions
                .insert(name.to_owned(), definition.clone());
            self.refresher.add_app(app, Origin::Registry).await?;
            tracing::info!(app = %name, change = ?put, "registry app stored");
        }
        let entry = self.refresher.app(name);
        Ok((put, shown(name, entry.as_deref(), Some(&definition))))
    }

    /// Removes the registry app `name`: no longer served, its tokens no longer
    /// refreshed and deleted from the store.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Conflict`] for an app of the config file;
    /// [`Error::Store`].
    pub async fn delete(&self, name: &str) -> Result<(), Error> {
        if self.is_config_app(name) {
            return Err(Error::Conflict(format!(
                "app {name:?} is defined in the config file; remove it there"
            )));
        }
        let mut known = self.state.lock().await;
        if !known.definitions.contains_key(name) {
            return Err(Error::NotFound(name.to_owned()));
        }
        if !self.store.delete_app(name).await? {
            tracing::warn!(app = %name, "the registry app was already gone from the store");
        }
        known.definitions.remove(name);
        if let Some(old) = self.refresher.remove_app(name) {
            old.stop_tasks().await;
            if self.store.is_shared() {
                // Other instances stop the app within FOLLOW_INTERVAL: its tokens go
                // once they have, so that none of them writes one back.
                let refresher = self.refresher.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(RETIRE_DELAY).await;
                    if let Err(error) = refresher.retire(&old).await {
                        tracing::warn!(app = %old.name(), %error, "cannot delete a removed app's tokens from the store");
                    }
                });
            } else {
                self.refresher.retire(&old).await?;
            }
        }
        tracing::info!(app = %name, "registry app removed");
        Ok(())
    }

    /// The app `name` as shown (config or registry), secrets masked.
    pub async fn get(&self, name: &str) -> Option<Value> {
        let entry = self.refresher.app(name)?;
        let known = self.state.lock().await;
        Some(shown(name, Some(&entry), known.definitions.get(name)))
    }

    /// Up to `limit` apps (config and registry) by name, after `after`; and the name
    /// to ask for the next page after, if there are more.
    pub async fn list(&self, limit: usize, after: Option<&str>) -> (Vec<Value>, Option<String>) {
        let catalog = self.refresher.snapshot();
        let mut names: Vec<&str> = catalog.apps().iter().map(|e| e.name()).collect();
        names.sort_unstable();
        let start = after.map_or(0, |after| names.partition_point(|n| *n <= after));
        let page = &names[start..(start + limit).min(names.len())];
        let known = self.state.lock().await;
        let apps = page
            .iter()
            .map(|name| {
                shown(
                    name,
                    catalog.app(name).map(Arc::as_ref),
                    known.definitions.get(*name),
                )
            })
            .collect();
        let next = (start + page.len() < names.len())
            .then(|| page.last().map(|n| (*n).to_owned()))
            .flatten();
        (apps, next)
    }

    /// With a shared store: follows the changes other instances make, checking the
    /// registry's revision every [`FOLLOW_INTERVAL`].
    pub fn spawn_follow(self: &Arc<Self>, tracker: &TaskTracker, cancel: &CancellationToken) {
        if !self.store.is_shared() {
            return;
        }
        let registry = self.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let mut ticks = tokio::time::interval(FOLLOW_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = ticks.tick() => registry.follow().await,
                }
            }
        });
    }

    /// One step of following: if the store's registry changed, applies the
    /// differences (apps added, replaced, removed by other instances).
    pub async fn follow(&self) {
        let revision = match self.store.apps_revision().await {
            Ok(revision) => revision,
            Err(error) => {
                tracing::debug!(%error, "cannot read the registry's revision");
                return;
            }
        };
        let mut known = self.state.lock().await;
        // No revision while apps are held: every save sets one, so the store lost it.
        let lost = revision < known.revision || (revision == 0 && !known.definitions.is_empty());
        if !lost && revision == known.revision {
            return;
        }
        if lost {
            // The revision went back: the store lost its data (a Redis restarted
            // empty, a FLUSHALL), not a deliberate removal. Write back what we hold.
            self.write_back(&mut known).await;
            return;
        }
        let records = match self.store.load_apps().await {
            Ok(records) => records,
            Err(error) => {
                tracing::warn!(%error, "cannot read the registry from the shared store");
                return;
            }
        };
        let mut present = HashSet::new();
        for record in &records {
            present.insert(record.name.as_str());
            let Some((definition, app)) = self.read_record(record) else {
                continue;
            };
            if known.definitions.get(&record.name) == Some(&definition) {
                continue;
            }
            if let Some(entry) = self.refresher.app(&record.name)
                && entry.config.generation == app.generation
                && !entry.config.held.is_empty()
                && !failing(&entry)
            {
                // Another instance stored a rotated refresh token: used from now on.
                spec::apply_held(&definition, &entry.config);
                known.definitions.insert(record.name.clone(), definition);
                continue;
            }
            // Stopped here, not retired: the instance that made the change deletes
            // the old tokens.
            if let Some(old) = self.refresher.remove_app(&record.name) {
                old.stop_tasks().await;
            }
            match self.refresher.add_app(app, Origin::Registry).await {
                Ok(_) => {
                    tracing::info!(app = %record.name, "registry app followed from the shared store");
                    known.definitions.insert(record.name.clone(), definition);
                }
                Err(error) => {
                    tracing::warn!(app = %record.name, %error, "cannot add a registry app yet; trying again");
                    return; // the revision is not recorded: the next step retries
                }
            }
        }
        let gone: Vec<String> = known
            .definitions
            .keys()
            .filter(|name| !present.contains(name.as_str()))
            .cloned()
            .collect();
        for name in gone {
            known.definitions.remove(&name);
            if let Some(old) = self.refresher.remove_app(&name) {
                old.stop_tasks().await;
            }
            tracing::info!(app = %name, "registry app removed by another instance");
        }
        known.revision = revision;
    }
}

impl Registry {
    /// Stores `definition` as the record of `name`.
    async fn save(&self, name: &str, definition: &Value) -> Result<(), store::Error> {
        let record = spec::encode(name, definition, self.sealer.as_ref());
        self.store
            .save_app(&StoredApp {
                name: name.to_owned(),
                record,
            })
            .await
    }

    /// Stores every definition this instance holds again, after the store lost them
    /// (its revision went back): apps are not dropped because Redis restarted empty.
    async fn write_back(&self, known: &mut Known) {
        tracing::warn!(
            apps = known.definitions.len(),
            "the shared store lost the registry (its revision went back): writing back the apps held here"
        );
        for (name, definition) in &known.definitions {
            let record = spec::encode(name, definition, self.sealer.as_ref());
            let app = StoredApp {
                name: name.clone(),
                record,
            };
            if let Err(error) = self.store.save_app(&app).await {
                tracing::warn!(app = %name, %error, "cannot write a registry app back; trying again");
                return; // the revision is not recorded: the next step retries
            }
        }
        match self.store.apps_revision().await {
            Ok(revision) => known.revision = revision,
            Err(error) => tracing::warn!(%error, "cannot read the registry's revision"),
        }
    }
}

/// The Open Platform apps of `config`, by name.
fn components_of(config: &Config) -> HashMap<String, Arc<ComponentConfig>> {
    config
        .apps
        .iter()
        .filter_map(|a| a.component.clone().map(|c| (a.name.clone(), c)))
        .collect()
}

#[async_trait::async_trait]
impl HeldStore for Registry {
    async fn store_held(&self, app: &str, held: &HeldValue) -> Result<(), String> {
        let mut known = self.state.lock().await;
        let Some(entry) = self.refresher.app(app) else {
            return Err(format!("app {app:?} is gone"));
        };
        let Some(definition) = known.definitions.get(app) else {
            return Err(format!("app {app:?} is not a registry app"));
        };
        debug_assert!(entry.config.held(held.name()).is_some());
        let updated = spec::with_held(definition, &entry.config);
        self.save(app, &updated).await.map_err(|e| e.to_string())?;
        known.definitions.insert(app.to_owned(), updated);
        Ok(())
    }

    async fn reload_held(&self, app: &str, _held: &HeldValue) -> bool {
        let records = match self.store.load_apps().await {
            Ok(records) => records,
            Err(error) => {
                tracing::warn!(%app, %error, "cannot read the registry to recover a refresh token");
                return false;
            }
        };
        let Some(record) = records.into_iter().find(|r| r.name == app) else {
            return false;
        };
        let Some((definition, _)) = self.read_record(&record) else {
            return false;
        };
        let Some(entry) = self.refresher.app(app) else {
            return false;
        };
        let mut known = self.state.lock().await;
        let changed = spec::apply_held(&definition, &entry.config);
        known.definitions.insert(app.to_owned(), definition);
        changed
    }
}

/// Is a refresh of one of `entry`'s tokens failing?
fn failing(entry: &AppEntry) -> bool {
    entry.creds.iter().any(|c| c.consecutive_failures() > 0)
}

/// An app as `/v1/apps` shows it: its definition with secrets masked (registry), or
/// what the config file says of it (config), with its source and token names.
fn shown(name: &str, entry: Option<&AppEntry>, definition: Option<&Value>) -> Value {
    let mut shown = match (entry.map(|e| e.origin), definition) {
        (Some(Origin::Registry) | None, Some(definition)) => spec::masked(definition),
        _ => {
            let preset = entry.and_then(AppEntry::preset);
            json!({
                "platform": preset.map(|p| p.platform.as_str()),
                "id": preset.map(|p| p.id.as_str()),
            })
        }
    };
    if let Value::Object(fields) = &mut shown {
        fields.insert("name".into(), json!(name));
        let source = entry.map_or(Origin::Registry, |e| e.origin);
        fields.insert("source".into(), json!(source.as_str()));
        let tokens: Vec<&str> = entry
            .map(|e| e.creds.iter().map(|c| c.key.name.as_str()).collect())
            .unwrap_or_default();
        fields.insert("tokens".into(), json!(tokens));
    }
    shown
}
