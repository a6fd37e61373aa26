//! An app's definition as the registry takes it: the keys of an `[apps.NAME]` table
//! as a JSON object, turned into the same [`AppConfig`] as the config file's (one
//! set of rules for both), shown with its secrets masked, and kept in the store as a
//! record that is sealed when the store has an encryption key.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use std::sync::Arc;

use super::seal::Sealer;
use crate::config::component::{Authorizer, ComponentConfig, authorizer_app};
use crate::config::{self, AppConfig, SECRET_KEYS};

/// The platform of an Open Platform authorizer's definition.
pub const AUTHORIZER: &str = "authorizer";

/// Keys of an authorizer's definition that WeChat may change (its refresh token):
/// left out of its generation, so a rotation is not a new definition.
const HELD_KEYS: [&str; 2] = ["refresh_token", "previous_refresh_token"];

/// When WeChat last authorised the authorizer (the `authorized` push's CreateTime,
/// Unix seconds): an `unauthorized` push older than it is a replay or late, and
/// is ignored. Not part of the generation either.
pub const AUTHORIZED_AT: &str = "authorized_at";

/// The Open Platform apps by name, for authorizers' definitions.
pub type Components<'a> = &'a dyn Fn(&str) -> Option<Arc<ComponentConfig>>;

/// Shown in place of every secret.
pub const MASK: &str = "***";

/// A definition that cannot become an app: what to tell the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Checks `definition` (a JSON object) and turns it into the app `name`.
///
/// # Errors
/// [`Invalid`] naming the field at fault, as the config file's errors do (without the
/// `apps.NAME.` prefix, which the caller did not write).
pub fn parse(name: &str, definition: &Value, components: Components) -> Result<AppConfig, Invalid> {
    match definition.get("platform").and_then(Value::as_str) {
        Some(AUTHORIZER) => return parse_authorizer(name, definition, components),
        Some("component") => {
            return Err(Invalid(
                "platform: an Open Platform app (platform = \"component\") is configured in the config file, where its event URL and keys are checked; registry apps are mp or wecom apps and a platform's authorizers".into(),
            ));
        }
        _ => {}
    }
    if let Some((platform, _)) = name.split_once('.')
        && components(platform).is_some()
    {
        return Err(Invalid(format!(
            "names {platform}.* belong to the authorizers of the Open Platform app {platform:?}: register them with PUT /v1/components/{platform}/authorizers/APPID"
        )));
    }
    let Value::Object(fields) = definition else {
        return Err(Invalid(
            "the body must be a JSON object with the keys of an [apps.NAME] table, e.g. {\"platform\": \"mp\", \"appid\": \"wx...\", \"secret\": \"...\"}".into(),
        ));
    };
    let mut table = toml::Table::new();
    for (key, value) in fields {
        table.insert(key.clone(), to_toml(key, value)?);
    }
    let mut app = config::preset_app(name, table).map_err(|e| {
        let text = e.to_string();
        let dotted = format!("apps.{name}.");
        let bare = format!("apps.{name}: ");
        let field = text
            .strip_prefix(&dotted)
            .or_else(|| text.strip_prefix(&bare))
            .unwrap_or(&text);
        Invalid(field.to_owned())
    })?;
    app.generation = Some(generation(definition));
    Ok(app)
}

/// An Open Platform authorizer: `{"platform": "authorizer", "component": PLATFORM,
/// "authorizer_appid": APPID, "refresh_token": ..., "previous_refresh_token"?: ...}`,
/// named `PLATFORM.APPID`, built with its platform's current settings.
fn parse_authorizer(
    name: &str,
    definition: &Value,
    components: Components,
) -> Result<AppConfig, Invalid> {
    let text = |key: &str| definition.get(key).and_then(Value::as_str);
    let required =
        |key: &str| text(key).ok_or_else(|| Invalid(format!("{key}: missing, or not a string")));
    let platform = required("component")?;
    let appid = required("authorizer_appid")?;
    if definition
        .get(AUTHORIZED_AT)
        .is_some_and(|v| v.as_u64().is_none())
    {
        return Err(Invalid(format!(
            "{AUTHORIZED_AT}: must be a Unix time in seconds"
        )));
    }
    let component = components(platform).ok_or_else(|| {
        Invalid(format!(
            "component: no Open Platform app {platform:?} (platform = \"component\") in the config file"
        ))
    })?;
    if name != component.authorizer_app(appid) {
        return Err(Invalid(format!(
            "an authorizer of {platform:?} must be named {:?}",
            component.authorizer_app(appid)
        )));
    }
    let mut app = authorizer_app(
        &component,
        &Authorizer {
            appid,
            refresh_token: required("refresh_token")?,
            previous_refresh_token: text("previous_refresh_token"),
        },
    )
    .map_err(|e| {
        let text = e.to_string();
        let prefix = format!("apps.{name}.");
        Invalid(text.strip_prefix(&prefix).unwrap_or(&text).to_owned())
    })?;
    // Tokens of another platform account under the same name are not this one's.
    let mut identity = definition.clone();
    if let Value::Object(fields) = &mut identity {
        fields.insert(
            "component_appid".into(),
            Value::String(component.component_appid.clone()),
        );
    }
    app.generation = Some(generation(&identity));
    Ok(app)
}

/// A digest of `definition`, the same on every instance (serde_json's objects keep
/// their keys sorted): tokens are stored with it, so that one fetched for an earlier
/// definition of the app is never served for a later one. Held values (an
/// authorizer's refresh token) are left out: WeChat rotates them, the app stays.
pub fn generation(definition: &Value) -> String {
    use sha2::{Digest, Sha256};
    let mut identity = definition.clone();
    if let Value::Object(fields) = &mut identity {
        for key in HELD_KEYS.iter().chain([&AUTHORIZED_AT]) {
            fields.remove(*key);
        }
    }
    let digest = Sha256::digest(identity.to_string().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// `definition` with the held values of `app` (its refresh tokens as now held) in
/// place of those it had.
pub fn with_held(definition: &Value, app: &AppConfig) -> Value {
    let mut updated = definition.clone();
    if let (Value::Object(fields), Some(held)) = (
        &mut updated,
        app.held(crate::config::component::REFRESH_TOKEN),
    ) {
        fields.insert(
            "refresh_token".into(),
            Value::String((*held.current()).clone()),
        );
        match held.previous() {
            Some(previous) => {
                fields.insert(
                    "previous_refresh_token".into(),
                    Value::String((*previous).clone()),
                );
            }
            None => {
                fields.remove("previous_refresh_token");
            }
        }
    }
    updated
}

/// Sets `app`'s held values from `definition` (as another instance stored it); true
/// if that changed them.
pub fn apply_held(definition: &Value, app: &AppConfig) -> bool {
    let Some(held) = app.held(crate::config::component::REFRESH_TOKEN) else {
        return false;
    };
    let Some(current) = definition.get("refresh_token").and_then(Value::as_str) else {
        return false;
    };
    let previous = definition
        .get("previous_refresh_token")
        .and_then(Value::as_str);
    let changed =
        *held.current() != current || held.previous().as_deref().map(String::as_str) != previous;
    held.set(current, previous);
    changed
}

/// JSON to TOML, refusing what TOML has no value for (null).
fn to_toml(path: &str, value: &Value) -> Result<toml::Value, Invalid> {
    Ok(match value {
        Value::Null => {
            return Err(Invalid(format!(
                "{path}: null is not a value; leave the key out instead"
            )));
        }
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => toml::Value::Integer(i),
            (None, Some(f)) => toml::Value::Float(f),
            _ => return Err(Invalid(format!("{path}: number out of range"))),
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(items) => toml::Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| to_toml(&format!("{path}[{i}]"), v))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => toml::Value::Table(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), to_toml(&format!("{path}.{k}"), v)?)))
                .collect::<Result<_, Invalid>>()?,
        ),
    })
}

/// `definition` with every secret replaced by [`MASK`].
pub fn masked(definition: &Value) -> Value {
    let mut shown = definition.clone();
    if let Value::Object(fields) = &mut shown {
        for key in SECRET_KEYS {
            if let Some(value) = fields.get_mut(key) {
                *value = Value::String(MASK.into());
            }
        }
    }
    shown
}

/// Does `definition` hold a secret (a key that is sealed at rest)?
pub fn has_secret(definition: &Value) -> bool {
    definition
        .as_object()
        .is_some_and(|fields| SECRET_KEYS.iter().any(|k| fields.contains_key(*k)))
}

/// A record as stored: the definition in the clear, or sealed.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    #[serde(skip_serializing_if = "Option::is_none")]
    definition: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sealed: Option<String>,
}

/// The stored record of `definition` (a JSON object), sealed when there is a key.
pub fn encode(name: &str, definition: &Value, sealer: Option<&Sealer>) -> String {
    let fields = definition.as_object().cloned().unwrap_or_default();
    let record = match sealer {
        Some(sealer) => {
            let plain = serde_json::to_vec(&fields).expect("a JSON object serialises");
            Record {
                definition: None,
                sealed: Some(sealer.seal(name, &plain)),
            }
        }
        None => Record {
            definition: Some(fields),
            sealed: None,
        },
    };
    serde_json::to_string(&record).expect("a record serialises")
}

/// The definition in a stored record.
///
/// # Errors
/// A message naming the problem: not a record, sealed without a key here, sealed with
/// another key.
pub fn decode(name: &str, record: &str, sealer: Option<&Sealer>) -> Result<Value, String> {
    let record: Record =
        serde_json::from_str(record).map_err(|e| format!("not a registry record: {e}"))?;
    match (record.definition, record.sealed, sealer) {
        (Some(fields), None, _) => Ok(Value::Object(fields)),
        (None, Some(sealed), Some(sealer)) => {
            let plain = sealer.open(name, &sealed).map_err(|e| e.to_string())?;
            serde_json::from_slice(&plain)
                .map_err(|e| format!("the sealed record is not JSON: {e}"))
        }
        (None, Some(_), None) => {
            Err("the record is sealed and store.encryption_key is not set on this instance".into())
        }
        _ => Err("a record holds either a definition or a sealed one".into()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::EncryptionKey;

    fn no_components(_: &str) -> Option<Arc<ComponentConfig>> {
        None
    }

    fn parse(name: &str, definition: &Value) -> Result<AppConfig, Invalid> {
        super::parse(name, definition, &no_components)
    }

    #[test]
    fn a_definition_becomes_the_same_app_as_in_the_config_file() {
        let app = parse(
            "shop1",
            &json!({"platform": "mp", "appid": "wx1", "secret": "s", "tickets": ["jsapi"]}),
        )
        .unwrap();
        let names: Vec<&str> = app.sources.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["access_token", "jsapi_ticket"]);
        assert_eq!(app.preset.unwrap().id, "wx1");
    }

    #[test]
    fn errors_name_the_field_without_the_config_prefix() {
        let error = parse("shop1", &json!({"platform": "mp", "appid": "wx1"})).unwrap_err();
        assert!(
            error.0.starts_with("secret") || error.0.contains("secret"),
            "{error}"
        );
        assert!(!error.0.contains("apps.shop1"), "{error}");
        let error = parse("shop1", &json!({"platform": "mp", "appid": null})).unwrap_err();
        assert!(error.0.starts_with("appid: null"), "{error}");
        let error = parse(
            "shop1",
            &json!({"platform": "mp", "appid": "a", "secret": "s", "colour": 1}),
        )
        .unwrap_err();
        assert!(error.0.contains("colour"), "{error}");
        assert!(parse("shop1", &json!(["mp"])).is_err());
        assert!(
            parse(
                "../x",
                &json!({"platform": "mp", "appid": "a", "secret": "s"})
            )
            .is_err()
        );
    }

    #[test]
    fn secrets_are_masked_when_shown() {
        let shown =
            masked(&json!({"platform": "wecom", "corpid": "c", "corpsecret": "cs", "agentid": 1}));
        assert_eq!(shown["corpsecret"], MASK);
        assert_eq!(shown["corpid"], "c");
        assert!(has_secret(&json!({"secret": "x"})));
        assert!(!has_secret(&json!({"appid": "x"})));
    }

    #[test]
    fn records_round_trip_in_the_clear_and_sealed() {
        let definition = json!({"platform": "mp", "appid": "wx1", "secret": "top-secret"});
        let clear = encode("a", &definition, None);
        assert_eq!(decode("a", &clear, None).unwrap(), definition);
        let sealer = Sealer::new(&EncryptionKey([3; 32]));
        let sealed = encode("a", &definition, Some(&sealer));
        assert!(!sealed.contains("top-secret") && !sealed.contains("wx1"));
        assert_eq!(decode("a", &sealed, Some(&sealer)).unwrap(), definition);
        assert!(
            decode("a", &sealed, None)
                .unwrap_err()
                .contains("encryption_key")
        );
        assert!(decode("b", &sealed, Some(&sealer)).is_err());
        assert!(decode("a", "{", None).is_err());
    }
}
