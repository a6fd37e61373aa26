//! An app's definition as the registry takes it: the keys of an `[apps.NAME]` table
//! as a JSON object, turned into the same [`AppConfig`] as the config file's (one
//! set of rules for both), shown with its secrets masked, and kept in the store as a
//! record that is sealed when the store has an encryption key.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::seal::Sealer;
use crate::config::{self, AppConfig, SECRET_KEYS};

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
pub fn parse(name: &str, definition: &Value) -> Result<AppConfig, Invalid> {
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

/// A digest of `definition`, the same on every instance (serde_json's objects keep
/// their keys sorted): tokens are stored with it, so that one fetched for an earlier
/// definition of the app is never served for a later one.
pub fn generation(definition: &Value) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(definition.to_string().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
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
