//! Why a refresh gave no token: WeChat (or the network) failed, the quota guard
//! refused to call, or no call could be made safely now. Only the first is WeChat's.

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
    /// No call was made: calling now could make other holders serve a token WeChat
    /// replaced (the cluster lease or the pending mark cannot be had: the store is
    /// unreachable, or another instance has been busy too long), and the current token
    /// still has life left.
    #[error("refresh deferred: {0}")]
    Deferred(String),
    /// The caller's own wait ended; the refresh goes on and its token is served when
    /// it arrives.
    #[error("no answer within {0} s; the refresh goes on")]
    WaitEnded(u64),
    /// Too many requests are already waiting for this token's refresh.
    #[error("too many requests are waiting for this token; retry in a moment")]
    Busy,
    /// The server is shutting down, or the refresh task failed.
    #[error("refresh task unavailable: {0}")]
    Task(String),
}

impl RefreshError {
    /// No call was made for want of a token the source needs (a verify ticket not
    /// pushed yet): asking again costs WeChat nothing.
    pub fn is_missing_dependency(&self) -> bool {
        matches!(self, Self::Upstream(upstream::Error::Dependency(_)))
    }

    /// WeChat's errcode; 45009 for a refusal because WeChat said 45009 earlier today.
    pub fn errcode(&self) -> Option<i64> {
        match self {
            RefreshError::Upstream(e) => e.errcode(),
            RefreshError::Quota(Refusal::Exhausted { .. }) => Some(QUOTA_ERRCODE),
            _ => None,
        }
    }

    /// WeChat's errmsg, or this error's text.
    pub fn errmsg(&self) -> String {
        match self {
            RefreshError::Upstream(upstream::Error::WeChat { errmsg, .. }) => errmsg.clone(),
            other => other.to_string(),
        }
    }

    /// Label for metrics: the errcode, `http_502`, `timeout`, ..., `quota_refused`,
    /// `deferred`.
    pub fn outcome(&self) -> Cow<'static, str> {
        match self {
            RefreshError::Upstream(e) => e.outcome().into(),
            RefreshError::Quota(_) => "quota_refused".into(),
            RefreshError::Deferred(_) => "deferred".into(),
            RefreshError::WaitEnded(_) => "wait_ended".into(),
            RefreshError::Busy => "busy".into(),
            RefreshError::Task(_) => "task_failed".into(),
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

    /// May the call have made WeChat issue a new token although none came back?
    pub fn may_have_issued(&self) -> bool {
        matches!(self, RefreshError::Upstream(e) if e.may_have_issued())
    }
}
