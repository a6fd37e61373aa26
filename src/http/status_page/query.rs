//! What `GET /?page=N&q=TEXT` asks for, and the links between pages.

use std::fmt::Write;

/// Apps shown on one page.
pub const PAGE_SIZE: usize = 100;

/// The longest search text taken: app names are at most 64 characters.
const MAX_QUERY: usize = 64;

/// A page request: which page (1-based) of the apps whose name contains `q`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PageQuery {
    pub page: usize,
    /// The search text as typed (trimmed); empty: every app.
    pub q: String,
}

impl PageQuery {
    /// Parses the query string; unknown parameters are ignored.
    ///
    /// # Errors
    /// A sentence naming the parameter at fault.
    pub fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut parsed = PageQuery {
            page: 1,
            q: String::new(),
        };
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*key {
                "page" => {
                    parsed.page = match value.trim().parse::<usize>() {
                        Ok(page) if page >= 1 => page,
                        _ => {
                            return Err(format!(
                                "page must be a whole number from 1 (got {:?})",
                                truncate(&value, MAX_QUERY)
                            ));
                        }
                    };
                }
                "q" => {
                    let q = value.trim();
                    if q.chars().count() > MAX_QUERY {
                        return Err(format!(
                            "q (the app name to search for) must be at most {MAX_QUERY} characters"
                        ));
                    }
                    parsed.q = q.to_owned();
                }
                _ => {}
            }
        }
        Ok(parsed)
    }

    /// Does app `name` match the search (case-insensitive, anywhere in the name)?
    pub fn matches(&self, name: &str, q_lower: &str) -> bool {
        q_lower.is_empty() || name.to_lowercase().contains(q_lower)
    }

    /// The URL of `page` with this search.
    pub fn href(&self, page: usize) -> String {
        let mut href = format!("/?page={page}");
        if !self.q.is_empty() {
            href.push_str("&amp;q=");
            href.extend(form_urlencoded::byte_serialize(self.q.as_bytes()));
        }
        href
    }

    /// `‹ previous · page 2 of 7 · next ›`, the links present where they lead somewhere.
    pub fn nav(&self, out: &mut String, pages: usize) {
        out.push_str("<nav class=\"pages\">");
        if self.page > 1 {
            let _ = write!(
                out,
                "<a rel=\"prev\" href=\"{}\">&lsaquo; previous</a> &middot; ",
                self.href(self.page - 1)
            );
        }
        let _ = write!(out, "page {} of {pages}", self.page);
        if self.page < pages {
            let _ = write!(
                out,
                " &middot; <a rel=\"next\" href=\"{}\">next &rsaquo;</a>",
                self.href(self.page + 1)
            );
        }
        out.push_str("</nav>");
    }
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_and_search_are_read_and_default_to_everything_on_page_one() {
        assert_eq!(PageQuery::parse(None).unwrap().page, 1);
        let query = PageQuery::parse(Some("page=3&q=+Shop%2D1+&x=y")).unwrap();
        assert_eq!(query.page, 3);
        assert_eq!(query.q, "Shop-1");
        assert!(query.matches("my-shop-17", "shop-1"));
        assert!(!query.matches("blog", "shop-1"));
    }

    #[test]
    fn a_bad_page_or_an_overlong_search_is_refused_by_name() {
        for bad in ["page=0", "page=two", "page=-1", "page="] {
            let e = PageQuery::parse(Some(bad)).unwrap_err();
            assert!(e.starts_with("page must be"), "{bad}: {e}");
        }
        let long = format!("q={}", "a".repeat(65));
        assert!(PageQuery::parse(Some(&long)).unwrap_err().starts_with("q "));
    }

    #[test]
    fn links_keep_the_search_escaped() {
        let query = PageQuery {
            page: 2,
            q: "a&b <c>".into(),
        };
        assert_eq!(query.href(3), "/?page=3&amp;q=a%26b+%3Cc%3E");
        let mut nav = String::new();
        query.nav(&mut nav, 3);
        assert!(nav.contains("rel=\"prev\" href=\"/?page=1&amp;q="), "{nav}");
        assert!(nav.contains("page 2 of 3"), "{nav}");
        assert!(nav.contains("rel=\"next\" href=\"/?page=3&amp;q="), "{nav}");
    }
}
