//! What the refresher needs of WeChat, as a trait: the HTTP client ([`Upstream`]) in
//! production, a model of WeChat in the deterministic simulation (`tests/sim`).

use async_trait::async_trait;
use reqwest::Url;

use crate::config::SourceConfig;
use crate::upstream::{self, Fetched, Upstream};

/// The values of the tokens a source refers to, by name.
pub type Lookup<'a> = &'a (dyn Fn(&str) -> Option<String> + Sync);

/// WeChat's token APIs.
#[async_trait]
pub trait TokenApi: Send + Sync + 'static {
    /// Fetches a token from `source`; `forced` selects stable_token's forced mode.
    async fn fetch(
        &self,
        source: &SourceConfig,
        lookup: Lookup<'_>,
        forced: bool,
    ) -> Result<Fetched, upstream::Error>;

    /// Does WeChat accept `access_token` now? Asked of `urls` in turn.
    async fn probe(&self, urls: &[Url], access_token: &str) -> Result<bool, upstream::Error>;

    /// Asks WeChat to push a pushed source's value now (`api_start_push_ticket`);
    /// the value arrives later at the event endpoint.
    async fn request_push(&self, _source: &SourceConfig) -> Result<(), upstream::Error> {
        Ok(())
    }
}

#[async_trait]
impl TokenApi for Upstream {
    async fn fetch(
        &self,
        source: &SourceConfig,
        lookup: Lookup<'_>,
        forced: bool,
    ) -> Result<Fetched, upstream::Error> {
        if forced {
            self.fetch_forced(source, lookup).await
        } else {
            Upstream::fetch(self, source, lookup).await
        }
    }

    async fn probe(&self, urls: &[Url], access_token: &str) -> Result<bool, upstream::Error> {
        self.probe_token(urls, access_token).await
    }

    async fn request_push(&self, source: &SourceConfig) -> Result<(), upstream::Error> {
        self.request(source).await
    }
}
