//! Who may read and refresh tokens. For now the seed's single `request_secret`;
//! compared in constant time so response timing reveals nothing about it.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use subtle::ConstantTimeEq;

use crate::domain::Secret;

/// Checks presented secrets.
pub struct Auth {
    request_secret: Secret,
}

impl Auth {
    pub fn new(request_secret: Secret) -> Self {
        Self { request_secret }
    }

    /// Is `presented` the request secret? Constant-time in the secret's content.
    pub fn is_request_secret(&self, presented: &str) -> bool {
        bool::from(
            presented
                .as_bytes()
                .ct_eq(self.request_secret.expose().as_bytes()),
        )
    }
}

/// The secret a request presents: `Authorization: Bearer <secret>` if present, else the
/// `secret` query parameter.
pub fn presented_secret<'a>(
    headers: &'a HeaderMap,
    query_secret: Option<&'a str>,
) -> Option<&'a str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .or(query_secret)
}

fn bearer(header: &str) -> Option<&str> {
    let (scheme, rest) = header.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_secret_is_accepted() {
        let auth = Auth::new(Secret::new("abc123"));
        assert!(auth.is_request_secret("abc123"));
        for wrong in ["", "abc", "abc1234", "ABC123", "abc12"] {
            assert!(!auth.is_request_secret(wrong), "{wrong}");
        }
    }

    #[test]
    fn bearer_header_wins_over_the_query() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented_secret(&headers, Some("q")), Some("q"));
        headers.insert(AUTHORIZATION, "Bearer  tok ".parse().unwrap());
        assert_eq!(presented_secret(&headers, Some("q")), Some("tok"));
        headers.insert(AUTHORIZATION, "bearer tok2".parse().unwrap());
        assert_eq!(presented_secret(&headers, None), Some("tok2"));
        headers.insert(AUTHORIZATION, "Basic xyz".parse().unwrap());
        assert_eq!(presented_secret(&headers, None), None);
    }
}
