//! `${NAME}` expansion from the environment, applied to every string value of the
//! parsed TOML so that secrets can stay out of config files.

use toml::{Table, Value};

use super::Error;

/// Replaces `${NAME}` in every string of `table` with `lookup(NAME)`.
///
/// `$${` stands for a literal `${`. The lookup is a parameter so that tests never touch
/// the process environment.
///
/// # Errors
/// [`Error::MissingEnv`] naming the key and the variable when a variable is not set, and
/// [`Error::Invalid`] for an unclosed `${`.
pub fn expand_table(
    table: &mut Table,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), Error> {
    for (key, value) in table.iter_mut() {
        let child = join(path, key);
        expand_value(value, &child, lookup)?;
    }
    Ok(())
}

fn expand_value(
    value: &mut Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), Error> {
    match value {
        Value::String(s) => *s = expand_str(s, path, lookup)?,
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, &format!("{path}[{i}]"), lookup)?;
            }
        }
        Value::Table(t) => expand_table(t, path, lookup)?,
        _ => {}
    }
    Ok(())
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Expands one string; see [`expand_table`].
pub fn expand_str(
    input: &str,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Error> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail.find('}').ok_or_else(|| Error::Invalid {
                key: path.to_owned(),
                message: "unclosed `${` (write `$${` for a literal `${`)".to_owned(),
            })?;
            let name = &tail[..end];
            let value = lookup(name).ok_or_else(|| Error::MissingEnv {
                key: path.to_owned(),
                var: name.to_owned(),
            })?;
            out.push_str(&value);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_variables_and_keeps_other_dollars() {
        assert_eq!(expand_str("x${A}y$z", "k", &env).unwrap(), "xalphay$z");
        assert_eq!(expand_str("${A}${A}", "k", &env).unwrap(), "alphaalpha");
        assert_eq!(expand_str("${EMPTY}", "k", &env).unwrap(), "");
        assert_eq!(expand_str("$${A}", "k", &env).unwrap(), "${A}");
        assert_eq!(expand_str("cost $5", "k", &env).unwrap(), "cost $5");
    }

    #[test]
    fn a_missing_variable_names_the_key_and_the_variable() {
        let err = expand_str("${NOPE}", "server.request_secret", &env).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("server.request_secret"), "{text}");
        assert!(text.contains("NOPE"), "{text}");
    }

    #[test]
    fn an_unclosed_reference_is_an_error() {
        assert!(expand_str("${A", "k", &env).is_err());
    }

    #[test]
    fn nested_tables_and_arrays_are_expanded_with_their_path() {
        let mut table: Table =
            toml::from_str("[s]\nargs = { a = \"${A}\" }\nlist = [\"${A}\", \"${MISSING}\"]")
                .unwrap();
        let err = expand_table(&mut table, "", &env).unwrap_err().to_string();
        assert!(err.contains("s.list[1]"), "{err}");
        let mut table: Table = toml::from_str("[s]\nargs = { a = \"${A}\" }").unwrap();
        expand_table(&mut table, "", &env).unwrap();
        assert_eq!(table["s"]["args"]["a"].as_str(), Some("alpha"));
    }
}
