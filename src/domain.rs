//! Small value types shared by every module.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A secret from the config (app secret, request secret). Its `Debug` and `Display`
/// never show the value, so it cannot leak through logs or `check-config`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The real value, for the few places that must send or compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Identifies one credential: a token name within an app.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialKey {
    pub app: String,
    pub name: String,
}

impl CredentialKey {
    pub fn new(app: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            app: app.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for CredentialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app, self.name)
    }
}

/// Longest token served (bytes). WeChat asks for 512 characters of room; real tokens
/// are about 140. Longer values are broken or hostile replies.
pub const MAX_TOKEN_BYTES: usize = 2048;

/// Can `value` be served as a token? Not empty, at most [`MAX_TOKEN_BYTES`], no
/// control characters and no whitespace of any kind (tokens are opaque words; a
/// Unicode line separator would split a header or a log line of the business servers
/// it is handed to). Checked on every reply, stored record and peer record: a value
/// that fails is never served.
pub fn is_usable_token(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_TOKEN_BYTES
        && !value.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// How many characters of a token may appear in logs.
pub const TOKEN_LOG_PREFIX: usize = 8;

/// A short, log-safe prefix of a token: enough to correlate, useless to an attacker.
pub fn token_prefix(token: &str) -> String {
    let prefix: String = token.chars().take(TOKEN_LOG_PREFIX).collect();
    format!("{prefix}…")
}

/// Milliseconds since the Unix epoch; what the stores persist.
pub fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX)
}

/// The inverse of [`unix_millis`]; saturates instead of overflowing on absurd input
/// (a corrupted store).
pub fn from_unix_millis(millis: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(millis))
        .unwrap_or(UNIX_EPOCH + Duration::from_secs(253_402_300_799))
}

/// Seconds in a day.
const DAY_SECS: u64 = 86_400;
/// WeChat's day starts at midnight China Standard Time, UTC+8, all year (no DST).
const CHINA_OFFSET_SECS: u64 = 8 * 3600;

/// Number of WeChat's day (days since 1970-01-01 in UTC+8) for a Unix time in seconds.
///
/// WeChat's daily quotas reset when this changes, so the quota guard counts calls per
/// this day, and the simulator resets its quotas on the same boundary.
pub fn wechat_day(unix_secs: u64) -> u64 {
    (unix_secs + CHINA_OFFSET_SECS) / DAY_SECS
}

/// WeChat's day at `time`.
pub fn wechat_day_at(time: SystemTime) -> u64 {
    wechat_day(unix_millis(time) / 1000)
}

/// When WeChat's day number `day` starts (midnight in China).
pub fn wechat_day_start(day: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs((day * DAY_SECS).saturating_sub(CHINA_OFFSET_SECS))
}

/// Is `name` usable as an app or token name? They become file names and Redis keys,
/// so they are restricted to a safe alphabet.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_and_display_hide_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "\"***\"");
        assert_eq!(secret.to_string(), "***");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn only_usable_tokens_pass() {
        assert!(is_usable_token("ACCESS_TOKEN-1"));
        assert!(is_usable_token(&"a".repeat(MAX_TOKEN_BYTES)));
        for bad in [
            "",
            " ",
            "\t \n",
            "ab\ncd",
            "ab\u{7}",
            "ab cd",
            "ab\u{2028}cd",
            "\u{a0}",
        ] {
            assert!(!is_usable_token(bad), "{bad:?}");
        }
        assert!(!is_usable_token(&"a".repeat(MAX_TOKEN_BYTES + 1)));
    }

    #[test]
    fn token_prefix_keeps_only_a_few_characters() {
        assert_eq!(token_prefix("ABCDEFGHIJKLMNOP"), "ABCDEFGH…");
        assert_eq!(token_prefix("ab"), "ab…");
    }

    #[test]
    fn names_are_limited_to_a_file_and_key_safe_alphabet() {
        assert!(is_valid_name("access_token"));
        assert!(is_valid_name("shop-2.prod"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("../etc"));
        assert!(!is_valid_name("a/b"));
        assert!(!is_valid_name("a b"));
        assert!(!is_valid_name(".hidden"));
    }

    #[test]
    fn the_wechat_day_changes_at_16_00_utc_which_is_midnight_in_china() {
        // 1970-01-01T15:59:59Z is 23:59:59 in Beijing; one second later is the next day.
        assert_eq!(wechat_day(0), 0);
        assert_eq!(wechat_day(57_599), 0);
        assert_eq!(wechat_day(57_600), 1);
        // 2024-01-01T00:00:00+08:00 = 2023-12-31T16:00:00Z = 1_704_038_400.
        assert_eq!(wechat_day(1_704_038_400), 19_723);
        assert_eq!(wechat_day(1_704_038_399), 19_722);
    }

    #[test]
    fn a_wechat_day_starts_at_its_china_midnight() {
        let start = wechat_day_start(19_723);
        assert_eq!(unix_millis(start), 1_704_038_400_000);
        assert_eq!(wechat_day_at(start), 19_723);
        assert_eq!(wechat_day_at(start - Duration::from_secs(1)), 19_722);
    }

    #[test]
    fn unix_millis_round_trips() {
        let t = from_unix_millis(1_700_000_000_123);
        assert_eq!(unix_millis(t), 1_700_000_000_123);
    }
}
