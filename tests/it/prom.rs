//! Reading `/metrics` in tests: scrape a server, find a sample by name and labels.

use reqwest::StatusCode;

use crate::helpers::TestApp;

/// One scrape of `/metrics`.
pub struct Scrape(pub String);

impl Scrape {
    /// Scrapes `app`, asserting a 200 in the Prometheus text format.
    pub async fn of(app: &TestApp) -> Self {
        let response = app
            .client
            .get(format!("{}/metrics", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
            "{content_type}"
        );
        Self(response.text().await.unwrap())
    }

    /// The sum of the samples named `name` whose labels include every pair of
    /// `labels`; 0 when there is none (a counter that never moved).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name)
            .filter(|(sample_labels, _)| {
                labels
                    .iter()
                    .all(|(k, v)| sample_labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|(_, value)| value)
            .sum()
    }

    /// Whether any sample is named `name`.
    pub fn has(&self, name: &str) -> bool {
        self.samples(name).next().is_some()
    }

    /// Every sample named `name`: its labels and value.
    pub fn samples<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = (Vec<(String, String)>, f64)> + 'a {
        self.0.lines().filter_map(move |line| {
            if line.starts_with('#') {
                return None;
            }
            let (series, value) = line.rsplit_once(' ')?;
            let (sample_name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if sample_name != name {
                return None;
            }
            let labels = labels
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (k, v) = pair.split_once("=\"")?;
                    Some((k.to_owned(), v.trim_end_matches('"').to_owned()))
                })
                .collect();
            Some((labels, value.parse().ok()?))
        })
    }
}

impl std::fmt::Display for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
