//! Why a call to WeChat failed, and what the failure tells about WeChat's side: whether
//! the request went out, and whether WeChat may have issued a token we never received.

use std::fmt;
use std::sync::Arc;

use super::TOKEN_REJECTED_CODES;

/// Why a call to WeChat failed. `Clone` so that every caller that shared one refresh
/// gets the same error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// WeChat answered with a non-zero errcode.
    #[error("WeChat refused: errcode {errcode}: {errmsg}")]
    WeChat { errcode: i64, errmsg: String },
    /// The host answered with an HTTP error status, or with a redirect (never followed:
    /// the request carries the app secret, which must not go to another host).
    #[error("WeChat answered HTTP {0}")]
    Status(u16),
    /// No answer within the call's timeout; the request may have gone out.
    #[error("WeChat did not answer in time")]
    Timeout,
    /// The request never went out: the connection could not be made (DNS, TCP, TLS
    /// handshake, connect timeout), or there was no host to send it to, or the request
    /// could not be built.
    #[error("cannot reach WeChat: {0}")]
    Connect(#[source] Cause),
    /// The connection failed after the request was sent (reset, closed without an
    /// answer, cut in the middle of the reply): WeChat may have acted on it.
    #[error("connection to WeChat lost after the request was sent: {0}")]
    Transport(#[source] Cause),
    /// The host answered, but not with a usable reply: not JSON, no usable token, a
    /// lifetime out of range, or a body over [`MAX_REPLY_BYTES`](super::MAX_REPLY_BYTES).
    #[error("WeChat's reply is malformed: {0}")]
    Malformed(String),
    /// A `{{name}}` argument could not be resolved because that token is unavailable.
    #[error("token {0} it depends on is not available")]
    Dependency(String),
}

impl Error {
    /// Is this WeChat saying that the access_token we sent is invalid or expired?
    pub fn is_token_rejected(&self) -> bool {
        matches!(self, Error::WeChat { errcode, .. } if TOKEN_REJECTED_CODES.contains(errcode))
    }

    /// WeChat's errcode, when WeChat gave one.
    pub fn errcode(&self) -> Option<i64> {
        match self {
            Error::WeChat { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }

    /// May WeChat have acted on the request (issued a new token, and so started the
    /// previous one's grace) although we got no usable answer?
    ///
    /// True when the request may have reached WeChat and its answer was lost or
    /// unusable: [`Timeout`](Error::Timeout), [`Transport`](Error::Transport),
    /// [`Malformed`](Error::Malformed) (a 200 whose body we could not use, or which was
    /// too large, may have carried a new token) and every [`Status`](Error::Status).
    /// Statuses are all counted, 4xx included: a proxy in front of WeChat may have
    /// forwarded the call and then failed (502, 504), and telling a proxy's own refusal
    /// from a forwarded call is guesswork; a wrong "true" costs one early refresh, a
    /// wrong "false" serves a token past its grace.
    ///
    /// False when WeChat certainly issued nothing: it answered with an errcode
    /// ([`WeChat`](Error::WeChat)), or no request went out
    /// ([`Connect`](Error::Connect), [`Dependency`](Error::Dependency)).
    pub fn may_have_issued(&self) -> bool {
        match self {
            Error::Timeout | Error::Transport(_) | Error::Status(_) | Error::Malformed(_) => true,
            Error::WeChat { .. } | Error::Connect(_) | Error::Dependency(_) => false,
        }
    }

    /// A short label for metrics and status: the errcode, `http_502`, `timeout`, ...
    pub fn outcome(&self) -> String {
        match self {
            Error::WeChat { errcode, .. } => errcode.to_string(),
            Error::Status(status) => format!("http_{status}"),
            Error::Timeout => "timeout".into(),
            Error::Connect(_) => "unreachable".into(),
            Error::Transport(_) => "connection_lost".into(),
            Error::Malformed(_) => "malformed".into(),
            Error::Dependency(_) => "dependency".into(),
        }
    }

    /// Should the next host of a fallback list be tried? Only when this host failed,
    /// not when WeChat gave an answer.
    pub(super) fn try_next_host(&self) -> bool {
        matches!(
            self,
            Error::Status(_) | Error::Timeout | Error::Connect(_) | Error::Transport(_)
        )
    }

    /// Sorts an error of `RequestBuilder::send` (which fails before any status line
    /// arrived): was the request sent or not?
    pub(super) fn from_send(e: reqwest::Error) -> Self {
        // A connect timeout is both `is_connect` and `is_timeout`: nothing was sent, so
        // it is a Connect. A builder error means no request could even be made.
        if e.is_connect() || e.is_builder() {
            Error::Connect(Cause::reqwest(e))
        } else if e.is_timeout() {
            Error::Timeout
        } else {
            Error::Transport(Cause::reqwest(e))
        }
    }

    /// Sorts an error while reading a reply's body: the request was sent and answered.
    pub(super) fn from_body(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            Error::Timeout
        } else {
            Error::Transport(Cause::reqwest(e))
        }
    }
}

/// The error behind a [`Connect`](Error::Connect) or [`Transport`](Error::Transport):
/// kept whole, so code can walk its chain ([`std::error::Error::source`]) or downcast it
/// to the `reqwest::Error`, and shared (`Arc`) so that [`Error`] stays `Clone`.
///
/// Its `Display` is the whole chain joined with `: ` (reqwest's own message alone says
/// only "error sending request"), because this error mostly reaches people as text: the
/// status page, `/readyz`, a 502's `errmsg`, a log line. Two causes are equal when their
/// texts are.
///
/// A reqwest error is kept without its URL: the URL's query string carries the app
/// secret.
#[derive(Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl Cause {
    /// Wraps any error.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Arc::new(error))
    }

    /// A cause that is only a message, for failures that have no error value (such as
    /// "no URL configured").
    pub fn message(text: impl Into<String>) -> Self {
        Self::new(Message(text.into()))
    }

    /// Wraps a reqwest error, without its URL.
    fn reqwest(error: reqwest::Error) -> Self {
        Self::new(error.without_url())
    }

    /// The wrapped error, e.g. to `downcast_ref::<reqwest::Error>()`.
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for Cause {}

/// A plain message as an error, for [`Cause::message`].
#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_variant() -> Vec<(Error, bool, &'static str)> {
        vec![
            (
                Error::WeChat {
                    errcode: -1,
                    errmsg: "system error".into(),
                },
                false,
                "-1",
            ),
            (Error::Status(502), true, "http_502"),
            (Error::Status(504), true, "http_504"),
            (Error::Status(404), true, "http_404"),
            (Error::Status(302), true, "http_302"),
            (Error::Timeout, true, "timeout"),
            (
                Error::Connect(Cause::message("connection refused")),
                false,
                "unreachable",
            ),
            (
                Error::Transport(Cause::message("connection reset")),
                true,
                "connection_lost",
            ),
            (Error::Malformed("not JSON".into()), true, "malformed"),
            (
                Error::Dependency("access_token".into()),
                false,
                "dependency",
            ),
        ]
    }

    #[test]
    fn may_have_issued_is_true_exactly_when_the_request_may_have_reached_wechat_unanswered() {
        for (error, expected, _) in every_variant() {
            assert_eq!(error.may_have_issued(), expected, "{error:?}");
        }
    }

    #[test]
    fn every_variant_has_its_metric_label() {
        for (error, _, label) in every_variant() {
            assert_eq!(error.outcome(), label, "{error:?}");
        }
    }

    #[test]
    fn a_cause_keeps_the_chain_and_shows_it_whole() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = Error::Connect(Cause::new(Wrapper(io)));
        assert_eq!(
            outer.to_string(),
            "cannot reach WeChat: tcp connect error: refused"
        );
        // Error -> Cause -> Wrapper -> io::Error: nothing is lost on the way down.
        let cause = std::error::Error::source(&outer).expect("a cause");
        let wrapper = cause.source().expect("the wrapped error");
        assert!(wrapper.downcast_ref::<Wrapper>().is_some());
        let root = wrapper.source().expect("the root cause");
        assert_eq!(
            root.downcast_ref::<std::io::Error>()
                .map(std::io::Error::kind),
            Some(std::io::ErrorKind::ConnectionRefused)
        );
    }

    #[test]
    fn causes_compare_by_their_text() {
        let a = Error::Transport(Cause::message("reset"));
        assert_eq!(a.clone(), a);
        assert_eq!(a, Error::Transport(Cause::message("reset")));
        assert_ne!(a, Error::Transport(Cause::message("closed")));
        assert_ne!(a, Error::Connect(Cause::message("reset")));
    }

    #[derive(Debug)]
    struct Wrapper(std::io::Error);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("tcp connect error")
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
