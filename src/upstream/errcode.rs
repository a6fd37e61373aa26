//! What WeChat's errcodes mean for an operator: a hint saying what to do, and whether
//! only a person can fix it. Logs, `/readyz` and the status page all use this table,
//! so the advice is written once.

/// Advice for one errcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advice {
    /// What to do about it, for logs and the status page.
    pub hint: &'static str,
    /// Retrying cannot help until someone changes the config or WeChat's console: the
    /// server retries slowly (`refresh.needs_person_retry_delay`) and is not ready.
    pub needs_person: bool,
}

const fn person(hint: &'static str) -> Option<Advice> {
    Some(Advice {
        hint,
        needs_person: true,
    })
}

const fn info(hint: &'static str) -> Option<Advice> {
    Some(Advice {
        hint,
        needs_person: false,
    })
}

/// Advice for `errcode`. `token_call` says whether the call was the one that turns the
/// app's id and secret into an access_token (a source with no `{{dependency}}`): there
/// 40001 means a wrong secret, elsewhere it means the access_token sent was rejected.
pub fn advice(errcode: i64, token_call: bool) -> Option<Advice> {
    match errcode {
        -1 => info("WeChat is busy; the server retries with backoff"),
        40001 if token_call => person(
            "wrong AppSecret (WeCom: corpsecret): fix the secret in the config, or reset it in the WeChat console",
        ),
        40001 | 40014 | 42001 => {
            info("the access_token sent was rejected; the server refreshes it and retries")
        }
        40002 => {
            person("invalid grant_type: the source's args must say grant_type=client_credential")
        }
        40013 => person("invalid AppID (WeCom: corpid): fix the appid in the config"),
        40125 => person(
            "wrong AppSecret: fix the secret in the config, or reset it in the WeChat console (Settings > Basic configuration)",
        ),
        40164 | 61004 => person(
            "add this server's IP to the IP whitelist in the WeChat console (Settings > Basic configuration > IP whitelist)",
        ),
        89501 | 89503 | 89506 | 89507 => person(
            "an administrator must confirm calls from this server's IP in the WeChat console, or add the IP to the whitelist",
        ),
        40243 => person("AppSecret frozen: unfreeze or reset it in the WeChat console"),
        41002 | 41004 => {
            person("appid or secret missing from the request: check the source's args")
        }
        45009 => info(
            "daily quota reached: resets at midnight China time; see clear_quota to reset it sooner",
        ),
        45011 => info("API minute-rate limit reached; the server retries with backoff"),
        48001 => person(
            "API unauthorised: this account lacks the permission (account type or verification); check the WeChat console",
        ),
        48006 => info("clear_quota was already used 10 times this month"),
        48017 => person("call from a retired IP: update the IP whitelist in the WeChat console"),
        // Open Platform.
        61003 => person(
            "the account no longer authorises this platform (the merchant withdrew, and the unauthorized push was missed): DELETE /v1/components/PLATFORM/authorizers/APPID, or have the merchant authorise again",
        ),
        61023 => person(
            "the authorizer's refresh token is refused, and neither the store nor WeChat's list (api_get_authorizer_list) has another: POST /v1/components/PLATFORM/sync, or have the merchant authorise again",
        ),
        61005 | 61006 => info(
            "the component_verify_ticket is expired or invalid: the server asked WeChat to push a new one (it pushes every 10 minutes)",
        ),
        _ => None,
    }
}

/// The IP address WeChat saw, from a 40164 errmsg such as
/// `invalid ip 1.2.3.4 ipv6 ::ffff:1.2.3.4, not in whitelist rid: ...`.
pub fn ip_in_errmsg(errmsg: &str) -> Option<&str> {
    let rest = &errmsg[errmsg.find("invalid ip ")? + "invalid ip ".len()..];
    let ip = rest
        .split(|c: char| c.is_whitespace() || c == ',')
        .next()
        .filter(|ip| !ip.is_empty())?;
    ip.chars()
        .all(|c| c.is_ascii_hexdigit() || c == '.' || c == ':')
        .then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_errors_that_need_a_person_are_flagged() {
        for code in [40013, 40125, 40164, 48001, 40243, 61003, 61023] {
            assert!(advice(code, true).unwrap().needs_person, "{code}");
            assert!(advice(code, false).unwrap().needs_person, "{code}");
        }
        assert!(advice(40001, true).unwrap().needs_person);
        assert!(!advice(40001, false).unwrap().needs_person);
        for code in [-1, 45009, 45011, 42001] {
            assert!(!advice(code, true).unwrap().needs_person, "{code}");
        }
        assert_eq!(advice(12345, true), None);
    }

    #[test]
    fn the_hints_say_what_to_do() {
        assert!(advice(40164, true).unwrap().hint.contains("IP whitelist"));
        assert!(advice(40125, true).unwrap().hint.contains("AppSecret"));
        assert!(advice(45009, true).unwrap().hint.contains("clear_quota"));
    }

    #[test]
    fn the_ip_wechat_saw_is_read_from_the_errmsg() {
        assert_eq!(
            ip_in_errmsg("invalid ip 1.2.3.4 ipv6 ::ffff:1.2.3.4, not in whitelist rid: 6x"),
            Some("1.2.3.4")
        );
        assert_eq!(
            ip_in_errmsg("invalid ip 203.0.113.9, not in whitelist"),
            Some("203.0.113.9")
        );
        assert_eq!(ip_in_errmsg("not in whitelist"), None);
        assert_eq!(ip_in_errmsg("invalid ip <script>, x"), None);
    }
}
