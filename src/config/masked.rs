//! `check-config` output: the resolved config as TOML, every secret masked.

use toml::{Table, Value};

use super::{Config, Scope, SourceConfig};

const MASK: &str = "***";

pub fn render(config: &Config) -> String {
    let mut root = Table::new();

    let mut server = Table::new();
    server.insert("bind".into(), config.server.bind.to_string().into());
    server.insert("request_secret".into(), MASK.into());
    server.insert(
        "max_connections".into(),
        i64::try_from(config.server.max_connections)
            .unwrap_or(i64::MAX)
            .into(),
    );
    for (key, value) in [
        ("shutdown_timeout", config.server.shutdown_timeout),
        ("header_read_timeout", config.server.header_read_timeout),
        ("idle_timeout", config.server.idle_timeout),
    ] {
        server.insert(key.into(), value.as_secs_f64().into());
    }
    let proxies: Vec<Value> = config
        .server
        .trusted_proxies
        .iter()
        .map(|net| net.to_string().into())
        .collect();
    server.insert("trusted_proxies".into(), proxies.into());
    if let Some(tls) = &config.server.tls {
        server.insert("tls_cert".into(), tls.cert.display().to_string().into());
        server.insert("tls_key".into(), tls.key.display().to_string().into());
    }
    root.insert("server".into(), server.into());

    let mut store = Table::new();
    store.insert("backend".into(), config.store.backend.as_str().into());
    store.insert(
        "path".into(),
        config.store.path.display().to_string().into(),
    );
    if !config.store.redis_url.expose().is_empty() {
        store.insert(
            "redis_url".into(),
            mask_url_password(config.store.redis_url.expose()).into(),
        );
    }
    if let Some(ca) = &config.store.redis_ca {
        store.insert("redis_ca".into(), ca.display().to_string().into());
    }
    store.insert("key_prefix".into(), config.store.key_prefix.clone().into());
    root.insert("store".into(), store.into());

    let r = &config.refresh;
    let mut refresh = Table::new();
    if let Some(cap) = r.token_expire_time {
        refresh.insert("token_expire_time".into(), cap.as_secs_f64().into());
    }
    refresh.insert(
        "min_retry_delay".into(),
        r.min_retry_delay.as_secs_f64().into(),
    );
    refresh.insert(
        "max_retry_delay".into(),
        r.max_retry_delay.as_secs_f64().into(),
    );
    refresh.insert(
        "force_min_interval".into(),
        r.force_min_interval.as_secs_f64().into(),
    );
    refresh.insert(
        "upstream_timeout".into(),
        r.upstream_timeout.as_secs_f64().into(),
    );
    refresh.insert(
        "needs_person_retry_delay".into(),
        r.needs_person_retry_delay.as_secs_f64().into(),
    );
    refresh.insert(
        "upstream_grace".into(),
        r.upstream_grace.as_secs_f64().into(),
    );
    refresh.insert(
        "max_concurrent_calls".into(),
        i64::try_from(r.max_concurrent_calls)
            .unwrap_or(i64::MAX)
            .into(),
    );
    root.insert("refresh".into(), refresh.into());

    let mut quota = Table::new();
    quota.insert(
        "daily_limit".into(),
        clamp_i64(config.quota.daily_limit).into(),
    );
    quota.insert("reserve".into(), clamp_i64(config.quota.reserve).into());
    root.insert("quota".into(), quota.into());

    let mut metrics = Table::new();
    metrics.insert("per_app".into(), config.metrics.per_app.into());
    root.insert("metrics".into(), metrics.into());

    // Apps are shown in their expanded form (the sources each app really uses), in
    // dependency order, which is the most useful view when debugging a config.
    let mut apps = Table::new();
    for app in &config.apps {
        let mut sources = Table::new();
        for source in &app.sources {
            sources.insert(source.name.clone(), source_table(source).into());
        }
        let mut app_table = Table::new();
        if let Some(preset) = &app.preset {
            app_table.insert("platform".into(), preset.platform.as_str().into());
            app_table.insert("id".into(), preset.id.clone().into());
            if let Some(agentid) = preset.agentid {
                app_table.insert("agentid".into(), agentid.to_string().into());
            }
        }
        app_table.insert("sources".into(), sources.into());
        apps.insert(app.name.clone(), app_table.into());
    }
    root.insert("apps".into(), apps.into());

    let mut gateway = Table::new();
    gateway.insert(
        "max_body".into(),
        i64::try_from(config.gateway.max_body)
            .unwrap_or(i64::MAX)
            .into(),
    );
    gateway.insert(
        "timeout".into(),
        config.gateway.timeout.as_secs_f64().into(),
    );
    root.insert("gateway".into(), gateway.into());

    let mut clients = Table::new();
    for client in &config.clients {
        let mut t = Table::new();
        t.insert("key_sha256".into(), MASK.into());
        t.insert("apps".into(), scope(&client.apps));
        t.insert("tokens".into(), scope(&client.tokens));
        t.insert("refresh".into(), client.refresh.into());
        if let Some(rate) = client.rate {
            t.insert("rate".into(), rate.into());
        }
        if let Some(networks) = &client.networks {
            let list: Vec<Value> = networks
                .iter()
                .map(|n| Value::from(n.to_string()))
                .collect();
            t.insert("networks".into(), list.into());
        }
        clients.insert(client.name.clone(), t.into());
    }
    if !clients.is_empty() {
        root.insert("clients".into(), clients.into());
    }
    toml::to_string_pretty(&root).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
}

/// TOML integers are i64.
fn clamp_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn source_table(source: &SourceConfig) -> Table {
    let mut t = Table::new();
    let urls: Vec<Value> = source
        .urls
        .iter()
        .map(|u| Value::from(u.to_string()))
        .collect();
    t.insert("urls".into(), urls.into());
    t.insert("method".into(), format!("{:?}", source.method).into());
    let mut args = Table::new();
    for (key, value) in &source.args {
        args.insert(key.clone(), masked_arg(key, &value.to_string()).into());
    }
    t.insert("args".into(), args.into());
    if let Some(body) = &source.body {
        t.insert("body".into(), Value::String(masked_body(body).to_string()));
    }
    if let Some(forced) = &source.forced {
        t.insert(
            "forced_body".into(),
            Value::String(masked_body(&forced.body).to_string()),
        );
    }
    t.insert("token_field".into(), source.token_field.clone().into());
    t.insert("expires_field".into(), source.expires_field.clone().into());
    if !source.deps.is_empty() {
        let deps: Vec<Value> = source.deps.iter().map(|d| Value::from(d.clone())).collect();
        t.insert("depends_on".into(), deps.into());
    }
    t
}

fn scope(scope: &Scope) -> Value {
    match scope {
        Scope::All => "*".into(),
        Scope::Only(names) => names
            .iter()
            .map(|n| Value::from(n.clone()))
            .collect::<Vec<_>>()
            .into(),
    }
}

/// A secret-looking argument is masked unless it is only a `{{reference}}`, which is
/// not a secret itself.
fn masked_arg(key: &str, value: &str) -> String {
    if SourceConfig::is_secret_arg(key) && !(value.starts_with("{{") && value.ends_with("}}")) {
        MASK.to_owned()
    } else {
        value.to_owned()
    }
}

fn masked_body(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = match v {
                        serde_json::Value::String(s) => serde_json::Value::String(masked_arg(k, s)),
                        other => masked_body(other),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(masked_body).collect())
        }
        other => other.clone(),
    }
}

/// `redis://user:pass@host/0` becomes `redis://user:***@host/0`.
pub fn mask_url_password(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some(MASK));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => MASK.to_owned(),
    }
}
