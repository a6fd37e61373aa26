//! `{{name}}` templates in source arguments: a reference to another token of the same
//! app, resolved at request time from that token's current value.

use std::fmt;

/// A parsed argument value: literal text with `{{name}}` references.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Reference(String),
}

/// Why a template did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("unclosed `{{{{` in {0:?}")]
    Unclosed(String),
    #[error("empty or invalid reference `{{{{{0}}}}}`: a reference names a token of the same app")]
    BadReference(String),
}

/// A token of the same app (`name`), or of another app (`app:name`: an authorizer's
/// reference to its platform's `component_access_token`).
fn is_valid_reference(name: &str) -> bool {
    match name.split_once(':') {
        Some((app, token)) => {
            crate::domain::is_valid_name(app) && crate::domain::is_valid_name(token)
        }
        None => crate::domain::is_valid_name(name),
    }
}

impl Template {
    /// Parses `{{name}}` references; whitespace inside the braces is ignored.
    ///
    /// # Errors
    /// An unclosed `{{` or a reference that is not a valid token name.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let mut parts = Vec::new();
        let mut rest = input;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_owned()));
            }
            let tail = &rest[start + 2..];
            let end = tail
                .find("}}")
                .ok_or_else(|| ParseError::Unclosed(input.to_owned()))?;
            let name = tail[..end].trim();
            if !is_valid_reference(name) {
                return Err(ParseError::BadReference(name.to_owned()));
            }
            parts.push(Part::Reference(name.to_owned()));
            rest = &tail[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// A template with no references.
    pub fn literal(text: impl Into<String>) -> Self {
        Self {
            parts: vec![Part::Literal(text.into())],
        }
    }

    /// The token names this template refers to.
    pub fn references(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Reference(name) => Some(name.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// Does the template contain any reference?
    pub fn has_references(&self) -> bool {
        self.references().next().is_some()
    }

    /// Renders the template; `lookup` gives the current value of a referenced token.
    /// A reference that `lookup` cannot resolve is reported by name.
    pub fn render(&self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Reference(name) => out.push_str(&lookup(name).ok_or_else(|| name.clone())?),
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Literal(text) => f.write_str(text)?,
                Part::Reference(name) => write!(f, "{{{{{name}}}}}")?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        (name == "access_token").then(|| "TOKEN".to_owned())
    }

    #[test]
    fn renders_literals_and_references() {
        let t = Template::parse("a={{access_token}}&b={{ access_token }}!").unwrap();
        assert_eq!(t.render(&lookup).unwrap(), "a=TOKEN&b=TOKEN!");
        assert_eq!(
            t.references().collect::<Vec<_>>(),
            ["access_token", "access_token"]
        );
        assert_eq!(t.to_string(), "a={{access_token}}&b={{access_token}}!");
    }

    #[test]
    fn plain_text_has_no_references() {
        let t = Template::parse("client_credential").unwrap();
        assert!(!t.has_references());
        assert_eq!(t.render(&lookup).unwrap(), "client_credential");
    }

    #[test]
    fn an_unresolved_reference_is_named() {
        let t = Template::parse("{{ticket}}").unwrap();
        assert_eq!(t.render(&lookup), Err("ticket".to_owned()));
    }

    #[test]
    fn malformed_templates_are_rejected() {
        assert!(matches!(
            Template::parse("{{access_token"),
            Err(ParseError::Unclosed(_))
        ));
        assert!(matches!(
            Template::parse("{{}}"),
            Err(ParseError::BadReference(_))
        ));
        assert!(matches!(
            Template::parse("{{a/b}}"),
            Err(ParseError::BadReference(_))
        ));
    }

    #[test]
    fn render_of_parse_is_identity_without_references() {
        for s in ["", "x", "}}", "{", "a}b{c", "中文"] {
            assert_eq!(Template::parse(s).unwrap().render(&lookup).unwrap(), s);
        }
    }
}
