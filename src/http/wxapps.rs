//! Apps as WeChat knows them: by appid (Official Accounts, Mini Programs) or corpid
//! (WeCom), with the secret WeChat would check. The facade finds an app per request
//! by this id, so the map is built once per catalog (the catalog changes when apps
//! are added, replaced or removed) instead of scanning 10,000 apps per request.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use arc_swap::ArcSwapOption;
use subtle::ConstantTimeEq;

use crate::config::{Platform, SourceConfig};
use crate::refresh::{AppEntry, Catalog, Refresher};

/// The access token every app has, under the presets' fixed name.
pub const ACCESS_TOKEN: &str = "access_token";

/// The WeChat identity of one app.
pub struct WxApp {
    pub entry: Arc<AppEntry>,
    pub platform: Platform,
}

impl WxApp {
    /// Is `presented` the app's own secret (`secret`, WeCom `corpsecret`)? Compared in
    /// constant time in its bytes.
    pub fn secret_matches(&self, presented: &str) -> bool {
        self.entry
            .credential(ACCESS_TOKEN)
            .and_then(|cred| secret_of(&cred.source))
            .is_some_and(|secret| bool::from(presented.as_bytes().ct_eq(secret.as_bytes())))
    }
}

/// The literal value of an argument or JSON body field of `source`.
fn literal(source: &SourceConfig, names: &[&str]) -> Option<String> {
    for (name, template) in &source.args {
        if names.contains(&name.as_str())
            && !template.has_references()
            && let Ok(value) = template.render(&|_| None)
        {
            return Some(value);
        }
    }
    let body = source.body.as_ref()?;
    names
        .iter()
        .find_map(|name| body.get(*name)?.as_str().map(str::to_owned))
}

fn secret_of(source: &SourceConfig) -> Option<String> {
    literal(source, &["secret", "corpsecret"])
}

/// The appid or corpid of `entry` and its platform: the preset's, else read off its
/// access token source (a `[sources]` app on WeChat's token paths).
fn identity(entry: &AppEntry) -> Option<(String, Platform)> {
    if let Some(preset) = entry.preset() {
        return Some((preset.id.clone(), preset.platform));
    }
    let source = entry.credential(ACCESS_TOKEN)?.source.clone();
    let path = source.urls.first()?.path().to_owned();
    let platform = if path.ends_with("/gettoken") {
        Platform::Wecom
    } else {
        Platform::Mp
    };
    let id = literal(&source, &["appid", "corpid"])?;
    Some((id, platform))
}

struct Built {
    /// The catalog it was built from (a `Weak`: its address cannot be reused while
    /// this is held, so comparing addresses is sound).
    catalog: Weak<Catalog>,
    /// (id, platform) -> app name. An appid and a corpid never collide in practice,
    /// but keying by both keeps `/cgi-bin/token` from finding a WeCom app.
    ids: HashMap<(String, Platform), Arc<str>>,
}

/// appid/corpid -> app, rebuilt lazily when the catalog changed.
#[derive(Default)]
pub struct WxApps {
    built: ArcSwapOption<Built>,
}

impl WxApps {
    /// The app whose WeChat id is `id` on `platform`.
    pub fn find(&self, refresher: &Refresher, id: &str, platform: Platform) -> Option<WxApp> {
        let catalog = refresher.snapshot();
        let current = self.built.load_full();
        let built = match current {
            Some(built) if std::ptr::eq(built.catalog.as_ptr(), Arc::as_ptr(&catalog)) => built,
            _ => {
                let built = Arc::new(build(&catalog));
                self.built.store(Some(built.clone()));
                built
            }
        };
        let name = built.ids.get(&(id.to_owned(), platform))?;
        let entry = catalog.app(name)?.clone();
        Some(WxApp { entry, platform })
    }
}

fn build(catalog: &Arc<Catalog>) -> Built {
    let mut ids = HashMap::with_capacity(catalog.len());
    for entry in catalog.apps() {
        if let Some(key) = identity(entry) {
            // Two apps of one id: the first (config order) answers.
            ids.entry(key).or_insert_with(|| Arc::from(entry.name()));
        }
    }
    Built {
        catalog: Arc::downgrade(catalog),
        ids,
    }
}

/// The platform of `entry`, as [`identity`] sees it.
pub fn platform_of(entry: &AppEntry) -> Option<Platform> {
    identity(entry).map(|(_, p)| p)
}
