//! Why a refresh gave no new token: WeChat (or the network) failed, or the quota guard
//! refused to call at all.

use std::borrow::Cow;

use super::quota::{QUOTA_ERRCODE, Refusal};
use crate::upstream::{self, errcode::Advice};

/// A failed refresh. `Clone` so that every caller that shared one refresh gets it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    /// The call was made and failed.
    #[error(transparent)]
    Upstream(#[from] upstream::Error),
    /// No call was made: the quota guard keeps the rest of today's quota.
    #[error(transparent)]
    Quota(#[from] Refusal),
}

impl RefreshError {
    /// WeChat's errcode; 45009 for a refusal because WeChat said 45009 earlier today.
    pub fn errcode(&self) -> Option<i64> {
        match self {
            RefreshError::Upstream(e) => e.errcode(),
            RefreshError::Quota(Refusal::Exhausted { .. }) => Some(QUOTA_ERRCODE),
            RefreshError::Quota(Refusal::Reserved { .. }) => None,
        }
    }

    /// WeChat's errmsg, or this error's text.
    pub fn errmsg(&self) -> String {
        match self {
            RefreshError::Upstream(upstream::Error::WeChat { errmsg, .. }) => errmsg.clone(),
            other => other.to_string(),
        }
    }

    /// Label for metrics: the errcode, `http_502`, `timeout`, ..., or `quota_refused`.
    pub fn outcome(&self) -> Cow<'static, str> {
        match self {
            RefreshError::Upstream(e) => e.outcome().into(),
            RefreshError::Quota(_) => "quota_refused".into(),
        }
    }

    /// What an operator should do about it; `token_call` as in
    /// [`upstream::errcode::advice`].
    pub fn advice(&self, token_call: bool) -> Option<Advice> {
        upstream::errcode::advice(self.errcode()?, token_call)
    }

    /// Only a person can fix this: retrying soon cannot help.
    pub fn needs_person(&self, token_call: bool) -> bool {
        self.advice(token_call).is_some_and(|a| a.needs_person)
    }
}
