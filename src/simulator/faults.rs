//! Injected faults: the next N calls of an endpoint fail in a chosen way.
//!
//! Faults are queued per endpoint and used in order, so a test can script "two busy
//! replies, then a dropped connection". A faulted call is counted in the stats but does
//! nothing else (no token, no quota), except two that model a lost answer: a delay,
//! which serves the call at once and holds the reply back, and issue-then-drop, which
//! serves it and never replies.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use serde::Deserialize;

use super::endpoint::Endpoint;

/// Longest delay accepted: far beyond any sane client timeout, short enough that a typo
/// can't park a connection for a day.
pub const MAX_DELAY: Duration = Duration::from_secs(600);

/// How a faulted call fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// A WeChat error reply (HTTP 200) with this errcode and errmsg, e.g. -1 "system error".
    Errcode {
        /// Non-zero WeChat error code.
        code: i64,
        /// Its message.
        msg: String,
    },
    /// An HTTP error from a proxy in front of WeChat, with an HTML body.
    HttpStatus(u16),
    /// The call is served normally, but the reply is held back this long: a slow WeChat
    /// that still did the work, so a client that timed out has still replaced its token.
    Delay(Duration),
    /// The connection is closed without any response; nothing is issued.
    Drop,
    /// The call is served normally (a token issued, replacing the previous one with
    /// the grace, quota used), then the connection is closed without any response:
    /// WeChat acted, and its answer was lost on the way back.
    IssueThenDrop,
    /// HTTP 200 with a body that is not valid JSON.
    Garbage,
}

/// A fault to inject: `count` calls of `endpoint` fail with `kind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Which endpoint.
    pub endpoint: Endpoint,
    /// How many of its next calls.
    pub count: u64,
    /// How they fail.
    pub kind: FaultKind,
}

/// Why a `/sim/faults` request was refused; the message tells the user what to send.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// Not JSON, a field of the wrong type, or an unknown field.
    #[error("fault is not valid JSON or has an unknown field: {0}")]
    Json(#[from] serde_json::Error),
    /// `endpoint` is not a path the simulator serves.
    #[error("unknown endpoint {0:?}; use one of: {paths}", paths = known_paths())]
    UnknownEndpoint(String),
    /// None or several of the fault kinds.
    #[error(
        "give exactly one of \"errcode\", \"http_status\", \"delay_ms\", \"drop\": true, \"issue_then_drop\": true, \"garbage\": true (got {0})"
    )]
    Kinds(usize),
    /// `count: 0` would inject nothing.
    #[error("\"count\" must be at least 1")]
    ZeroCount,
    /// `errcode: 0` is a success, not a fault.
    #[error("\"errcode\" must be non-zero: 0 is WeChat's success")]
    ZeroErrcode,
    /// Not an HTTP error status.
    #[error("\"http_status\" must be between 400 and 599, got {0}")]
    Status(u16),
    /// Longer than [`MAX_DELAY`].
    #[error("\"delay_ms\" must be at most {} (10 minutes)", MAX_DELAY.as_millis())]
    Delay,
    /// `errmsg` without `errcode`.
    #[error("\"errmsg\" only goes with \"errcode\"")]
    StrayErrmsg,
}

fn known_paths() -> String {
    let paths: Vec<_> = Endpoint::ALL.iter().map(|e| e.path()).collect();
    paths.join(", ")
}

/// The JSON body of `POST /sim/faults`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultSpec {
    endpoint: String,
    count: Option<u64>,
    errcode: Option<i64>,
    errmsg: Option<String>,
    http_status: Option<u16>,
    delay_ms: Option<u64>,
    #[serde(default)]
    drop: bool,
    #[serde(default)]
    issue_then_drop: bool,
    #[serde(default)]
    garbage: bool,
}

impl Fault {
    /// Parses and checks a `/sim/faults` body. `count` defaults to 1.
    ///
    /// # Errors
    /// A [`FaultError`] saying what is wrong with the request.
    pub fn from_json(body: &[u8]) -> Result<Self, FaultError> {
        let spec: FaultSpec = serde_json::from_slice(body)?;
        let endpoint = Endpoint::from_path(&spec.endpoint)
            .ok_or_else(|| FaultError::UnknownEndpoint(spec.endpoint.clone()))?;
        let count = spec.count.unwrap_or(1);
        if count == 0 {
            return Err(FaultError::ZeroCount);
        }
        let mut kinds = Vec::new();
        if let Some(code) = spec.errcode {
            if code == 0 {
                return Err(FaultError::ZeroErrcode);
            }
            let msg = spec
                .errmsg
                .clone()
                .unwrap_or_else(|| default_errmsg(code).to_owned());
            kinds.push(FaultKind::Errcode { code, msg });
        } else if spec.errmsg.is_some() {
            return Err(FaultError::StrayErrmsg);
        }
        if let Some(status) = spec.http_status {
            if !(400..=599).contains(&status) {
                return Err(FaultError::Status(status));
            }
            kinds.push(FaultKind::HttpStatus(status));
        }
        if let Some(ms) = spec.delay_ms {
            let delay = Duration::from_millis(ms);
            if delay > MAX_DELAY {
                return Err(FaultError::Delay);
            }
            kinds.push(FaultKind::Delay(delay));
        }
        if spec.drop {
            kinds.push(FaultKind::Drop);
        }
        if spec.issue_then_drop {
            kinds.push(FaultKind::IssueThenDrop);
        }
        if spec.garbage {
            kinds.push(FaultKind::Garbage);
        }
        match <[FaultKind; 1]>::try_from(kinds) {
            Ok([kind]) => Ok(Fault {
                endpoint,
                count,
                kind,
            }),
            Err(kinds) => Err(FaultError::Kinds(kinds.len())),
        }
    }
}

/// WeChat's wording for the codes a test is likely to inject.
fn default_errmsg(code: i64) -> &'static str {
    match code {
        -1 => "system error",
        40001 => "invalid credential, access_token is invalid or not latest",
        40164 => "invalid ip, not in whitelist",
        45009 => "reach max api daily quota limit",
        45011 => "api minute-quota reach limit, must slower, retry next minute",
        40243 => "AppSecret had been frozen",
        _ => "simulated error",
    }
}

/// Queued faults per endpoint.
#[derive(Debug, Default)]
pub struct Faults {
    queues: HashMap<Endpoint, VecDeque<(FaultKind, u64)>>,
}

impl Faults {
    /// Queues `fault` behind the faults already waiting for its endpoint.
    pub fn push(&mut self, fault: Fault) {
        let queue = self.queues.entry(fault.endpoint).or_default();
        queue.push_back((fault.kind, fault.count));
    }

    /// The fault for the next call of `endpoint`, if one is queued; uses it up.
    pub fn take(&mut self, endpoint: Endpoint) -> Option<FaultKind> {
        let queue = self.queues.get_mut(&endpoint)?;
        let (kind, left) = queue.front_mut()?;
        let kind = kind.clone();
        *left -= 1;
        if *left == 0 {
            queue.pop_front();
        }
        Some(kind)
    }

    /// Remaining faulted calls per endpoint path.
    pub fn pending(&self) -> BTreeMap<String, u64> {
        self.queues
            .iter()
            .map(|(e, q)| (e.path().to_owned(), q.iter().map(|(_, n)| n).sum()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_errcode_fault_gets_wechats_message_and_a_count_of_one_by_default() {
        let fault = Fault::from_json(br#"{"endpoint": "/cgi-bin/token", "errcode": -1}"#);
        let expected = Fault {
            endpoint: Endpoint::Token,
            count: 1,
            kind: FaultKind::Errcode {
                code: -1,
                msg: "system error".into(),
            },
        };
        assert_eq!(fault.ok(), Some(expected));
    }

    #[test]
    fn issue_then_drop_is_a_kind_of_its_own() {
        let fault = Fault::from_json(br#"{"endpoint": "/cgi-bin/token", "issue_then_drop": true}"#);
        assert_eq!(fault.ok().map(|f| f.kind), Some(FaultKind::IssueThenDrop));
        let refused = Fault::from_json(br#"{"endpoint": "/cgi-bin/token"}"#).unwrap_err();
        assert!(
            refused.to_string().contains("\"issue_then_drop\": true"),
            "{refused}"
        );
    }

    #[test]
    fn a_fault_needs_exactly_one_kind_and_a_known_endpoint() {
        let bad: &[&[u8]] = &[
            br#"{"endpoint": "/cgi-bin/token"}"#,
            br#"{"endpoint": "/cgi-bin/token", "drop": true, "garbage": true}"#,
            br#"{"endpoint": "/cgi-bin/token", "drop": true, "issue_then_drop": true}"#,
            br#"{"endpoint": "/cgi-bin/nope", "drop": true}"#,
            br#"{"endpoint": "/cgi-bin/token", "count": 0, "drop": true}"#,
            br#"{"endpoint": "/cgi-bin/token", "http_status": 200}"#,
            br#"{"endpoint": "/cgi-bin/token", "errcode": 0}"#,
            br#"{"endpoint": "/cgi-bin/token", "delay_ms": 600001}"#,
            br#"{"endpoint": "/cgi-bin/token", "drop": true, "extra": 1}"#,
            br#"{"endpoint": "/cgi-bin/token", "drop": true, "errmsg": "x"}"#,
            b"not json",
        ];
        for body in bad {
            assert!(
                Fault::from_json(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn queued_faults_are_used_in_order_and_then_run_out() {
        let mut faults = Faults::default();
        let fault = |count, kind| Fault {
            endpoint: Endpoint::Token,
            count,
            kind,
        };
        faults.push(fault(2, FaultKind::Garbage));
        faults.push(fault(1, FaultKind::Drop));
        assert_eq!(faults.pending().get("/cgi-bin/token"), Some(&3));
        assert_eq!(faults.take(Endpoint::Token), Some(FaultKind::Garbage));
        assert_eq!(faults.take(Endpoint::Token), Some(FaultKind::Garbage));
        assert_eq!(faults.take(Endpoint::Token), Some(FaultKind::Drop));
        assert_eq!(faults.take(Endpoint::Token), None);
        assert_eq!(faults.take(Endpoint::GetTicket), None);
        assert!(faults.pending().is_empty());
    }
}
