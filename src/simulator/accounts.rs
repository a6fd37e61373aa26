//! Which apps and corps the simulator accepts, and with which secrets.
//!
//! Looked up on every token call, so by map rather than by scanning the list: a benchmark
//! with 10,000 apps makes 20,000 calls in its first minute. With `accept_any_app`, an id
//! that was not listed is accepted with the secret [`any_app_secret`] derives from it, so
//! thousands of apps need no command line (or file) of their own.

use std::collections::HashMap;

use super::{DEMO_APPID, DEMO_CORPID, DEMO_CORPSECRET, DEMO_SECRET, SimConfig};

/// The secret of an app (or corp) that was not listed, under `--accept-any-app`: the id
/// prefixed with `secret-`. Public on purpose: the simulator exists for tests, and a rule
/// anyone can compute is what lets a benchmark write 10,000 apps into a config file.
pub fn any_app_secret(id: &str) -> String {
    format!("secret-{id}")
}

/// Why a corp's token call is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorpRefusal {
    /// The corpid is not accepted (40013).
    UnknownCorp,
    /// The corpid is, but not with this secret (40001).
    WrongSecret,
}

/// The accepted apps and corps.
#[derive(Debug)]
pub struct Accounts {
    /// appid -> secret, the demo app when none was listed.
    apps: HashMap<String, String>,
    /// corpid -> its secrets, in the order given: a secret's position is its WeCom app
    /// (each has its own token).
    corps: HashMap<String, Vec<String>>,
    /// Secrets of unlisted corps seen so far, in order of first use, when any id is
    /// accepted: the same positions as for listed ones.
    any_corps: HashMap<String, Vec<String>>,
    accept_any: bool,
}

impl Accounts {
    /// The accounts of `config`; unlisted corps' secrets are learnt as they are used.
    pub fn new(config: &SimConfig) -> Self {
        let mut apps: HashMap<String, String> = config.apps.iter().cloned().collect();
        if config.apps.is_empty() {
            apps.insert(DEMO_APPID.into(), DEMO_SECRET.into());
        }
        let mut corps: HashMap<String, Vec<String>> = HashMap::new();
        for (id, secret) in &config.corps {
            corps.entry(id.clone()).or_default().push(secret.clone());
        }
        if config.corps.is_empty() {
            corps.insert(DEMO_CORPID.into(), vec![DEMO_CORPSECRET.into()]);
        }
        Self {
            apps,
            corps,
            any_corps: HashMap::new(),
            accept_any: config.accept_any_app,
        }
    }

    /// Is `id` an accepted appid or corpid (for per-app stats)?
    pub fn knows(&self, id: &str) -> bool {
        self.accept_any || self.apps.contains_key(id) || self.corps.contains_key(id)
    }

    /// Does `appid` exist, and is `secret` its secret? `None`: no such app.
    pub fn app_secret_matches(&self, appid: &str, secret: &str) -> Option<bool> {
        match self.apps.get(appid) {
            Some(expected) => Some(expected == secret),
            None if self.accept_any => Some(any_app_secret(appid) == secret),
            None => None,
        }
    }

    /// The position of `secret` among `corpid`'s secrets (its WeCom app). Unlisted corps,
    /// when any id is accepted, take `secret-CORPID` or `secret-CORPID-ANYTHING`, each
    /// distinct one a WeCom app of its own.
    ///
    /// # Errors
    /// See [`CorpRefusal`].
    pub fn corp_secret_index(&mut self, corpid: &str, secret: &str) -> Result<usize, CorpRefusal> {
        if let Some(secrets) = self.corps.get(corpid) {
            return secrets
                .iter()
                .position(|s| s == secret)
                .ok_or(CorpRefusal::WrongSecret);
        }
        if !self.accept_any {
            return Err(CorpRefusal::UnknownCorp);
        }
        let base = any_app_secret(corpid);
        let fits = secret
            .strip_prefix(base.as_str())
            .is_some_and(|rest| rest.is_empty() || (rest.len() > 1 && rest.starts_with('-')));
        if !fits {
            return Err(CorpRefusal::WrongSecret);
        }
        let seen = self.any_corps.entry(corpid.to_owned()).or_default();
        Ok(seen.iter().position(|s| s == secret).unwrap_or_else(|| {
            seen.push(secret.to_owned());
            seen.len() - 1
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any() -> Accounts {
        Accounts::new(&SimConfig {
            apps: vec![("wx1".into(), "listed".into())],
            accept_any_app: true,
            ..SimConfig::default()
        })
    }

    #[test]
    fn a_listed_app_keeps_its_own_secret_and_others_follow_the_rule() {
        let accounts = any();
        assert_eq!(accounts.app_secret_matches("wx1", "listed"), Some(true));
        assert_eq!(
            accounts.app_secret_matches("wx1", "secret-wx1"),
            Some(false)
        );
        assert_eq!(accounts.app_secret_matches("wx9", "secret-wx9"), Some(true));
        assert_eq!(
            accounts.app_secret_matches("wx9", "secret-wx8"),
            Some(false)
        );
        let strict = Accounts::new(&SimConfig::default());
        assert_eq!(strict.app_secret_matches("wx9", "secret-wx9"), None);
        assert_eq!(
            strict.app_secret_matches(DEMO_APPID, DEMO_SECRET),
            Some(true)
        );
    }

    #[test]
    fn each_rule_secret_of_an_unlisted_corp_is_its_own_wecom_app() {
        let mut accounts = any();
        assert_eq!(accounts.corp_secret_index("ww1", "secret-ww1"), Ok(0));
        assert_eq!(accounts.corp_secret_index("ww1", "secret-ww1-hr"), Ok(1));
        assert_eq!(accounts.corp_secret_index("ww1", "secret-ww1"), Ok(0));
        for bad in ["secret-ww2", "secret-ww1x", "secret-ww1-", "nope"] {
            assert_eq!(
                accounts.corp_secret_index("ww1", bad),
                Err(CorpRefusal::WrongSecret),
                "{bad}"
            );
        }
        let mut strict = Accounts::new(&SimConfig::default());
        assert_eq!(
            strict.corp_secret_index("ww1", "secret-ww1"),
            Err(CorpRefusal::UnknownCorp)
        );
    }
}
