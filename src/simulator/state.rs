//! Everything the simulator remembers: issued credentials, quotas, counters, faults, clock.
//!
//! All of it sits behind one `std::sync::Mutex` in [`super::Simulator`]. Every operation
//! is short and never awaits, so a blocking mutex is cheaper and simpler than an async one,
//! and one lock for everything makes "count the call, take a fault, issue a token" atomic:
//! concurrent calls can't lose a count or both replace the same token.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rand::Rng;
use serde::Serialize;
use tokio::time::Instant;

use super::SimConfig;
use super::accounts::Accounts;
use super::clock::Clock;
use super::component::Components;
use super::endpoint::Endpoint;
use super::faults::Faults;

/// Length of an issued access_token. WeChat says to reserve 512; real ones are ~140.
const TOKEN_LEN: usize = 136;
/// Length of an issued ticket, like the one in WeChat's JS-SDK example.
const TICKET_LEN: usize = 86;
/// Alphabet of issued credentials: URL-safe, so they can go in a query string as they are.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// What a credential is; it decides which endpoints accept it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// From `/cgi-bin/token`.
    Token,
    /// From `/cgi-bin/stable_token`.
    StableToken,
    /// From WeCom's `/cgi-bin/gettoken`.
    CorpToken,
    /// `type=jsapi` ticket.
    JsapiTicket,
    /// `type=wx_card` ticket.
    WxCardTicket,
    /// WeCom corp jsapi ticket.
    CorpTicket,
    /// WeCom `agent_config` ticket.
    AgentTicket,
    /// An Open Platform component_access_token (`api_component_token`).
    ComponentToken,
    /// An authorizer's access token, got by a component (`api_query_auth`,
    /// `api_authorizer_token`); used like an Official Account's own token.
    AuthorizerToken,
}

impl Kind {
    /// Access tokens, as opposed to tickets.
    pub fn is_token(self) -> bool {
        matches!(
            self,
            Kind::Token
                | Kind::StableToken
                | Kind::CorpToken
                | Kind::ComponentToken
                | Kind::AuthorizerToken
        )
    }
}

/// Whose credential it is: an appid or corpid, plus, for WeCom, which of the corp's secrets
/// (each WeCom secret has its own token and agent ticket). 0 for Official Accounts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// appid or corpid; stats and quotas are kept per id.
    pub id: String,
    /// Index of the corp secret among those given for `id`. For an authorizer's token
    /// (`id` is the authorizer appid), 1 + the component's index: each component holds
    /// its own token for the account, apart from the account's own (0).
    pub secret: usize,
}

/// One issued token or ticket.
#[derive(Debug, Clone)]
pub struct Cred {
    /// The app it was issued to; tickets fetched with it belong to the same app.
    pub owner: Owner,
    /// What it is.
    pub kind: Kind,
    /// End of its lifetime.
    pub expires_at: Instant,
    /// Set when it was replaced: it is rejected from then on (now + grace, or now).
    pub revoked_at: Option<Instant>,
}

/// What WeChat would say about a credential right now.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// Never issued (or not of the kind asked for): 40014.
    Unknown,
    /// Accepted; `Duration` is its remaining life.
    Valid(&'a Cred, Duration),
    /// Past its lifetime: 42001.
    Expired(&'a Cred),
    /// Replaced by a newer one and past its grace: 40001.
    Replaced(&'a Cred),
}

/// What happens to the current credential of a slot when a new one is issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Stays valid for the grace period (`/cgi-bin/token`, gettoken, tickets).
    AfterGrace,
    /// Rejected at once (forced stable_token).
    Now,
    /// Lives until its own expiry (stable_token renewed in its last minutes).
    Never,
}

/// Forced stable_token calls of one app today.
#[derive(Debug, Default)]
pub struct Forced {
    /// WeChat's day the count is for.
    pub day: u64,
    /// Forced refreshes performed that day.
    pub count: u32,
    /// When the last forced refresh was performed.
    pub last: Option<Instant>,
}

/// Call counters, as `/sim/stats` shows them.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    /// Calls per endpoint path, failed and faulted ones included.
    pub calls: BTreeMap<String, u64>,
    /// Calls per app id (appid or corpid) and endpoint path, when the call named a known app
    /// or carried a token the simulator issued.
    pub apps: BTreeMap<String, BTreeMap<String, u64>>,
    /// Credentials issued per endpoint path (a stable_token call returning the current
    /// token issues nothing).
    pub issued: BTreeMap<String, u64>,
    /// Faults still queued per endpoint path (sum of their remaining counts).
    pub faults_pending: BTreeMap<String, u64>,
    /// Seconds the clock has been advanced by `/sim/advance`.
    pub clock_offset_secs: u64,
    /// Token and ticket calls being answered now (an injected delay included).
    pub in_flight: u64,
    /// The most token and ticket calls answered at once since start or reset.
    pub max_in_flight: u64,
}

/// The simulator's whole state; see the module doc for the locking rule.
#[derive(Debug)]
pub struct State {
    /// Settings, fixed at start.
    pub config: SimConfig,
    /// The apps and corps accepted, from `config`.
    pub accounts: Accounts,
    /// Time as the simulator sees it.
    pub clock: Clock,
    /// Every credential issued since start or reset, by value. Never pruned, so an old
    /// token still gets 40001/42001 rather than 40014; its growth is bounded by the daily
    /// quota (a few MB per app and day at WeChat's limits), and `/sim/reset` clears it.
    creds: HashMap<String, Cred>,
    /// The latest credential of each (owner, kind).
    current: HashMap<(Owner, Kind), String>,
    /// Successful calls per (app id, endpoint) on WeChat's day `.0`.
    quota: HashMap<(String, Endpoint), (u64, u64)>,
    /// Forced stable_token bookkeeping per appid.
    pub forced: HashMap<String, Forced>,
    /// Counters for `/sim/stats`.
    calls: HashMap<Endpoint, u64>,
    app_calls: HashMap<String, HashMap<Endpoint, u64>>,
    issued: HashMap<Endpoint, u64>,
    /// Queued faults.
    pub faults: Faults,
    /// Uploaded media by media_id: (content type, bytes).
    pub media: HashMap<String, (String, axum::body::Bytes)>,
    /// Open Platform components: tickets, codes, authorizers.
    pub components: Components,
}

impl State {
    /// Empty state; the clock starts now.
    pub fn new(config: SimConfig) -> Self {
        Self {
            accounts: Accounts::new(&config),
            components: Components::new(&config),
            config,
            clock: Clock::new(),
            creds: HashMap::new(),
            current: HashMap::new(),
            quota: HashMap::new(),
            forced: HashMap::new(),
            calls: HashMap::new(),
            app_calls: HashMap::new(),
            issued: HashMap::new(),
            faults: Faults::default(),
            media: HashMap::new(),
        }
    }

    /// Forgets credentials, counters, quotas and faults. The clock keeps its offset: time
    /// never runs backwards, so a client's idea of "now" stays right.
    pub fn reset(&mut self) {
        let config = self.config.clone();
        let clock = std::mem::replace(&mut self.clock, Clock::new());
        *self = Self::new(config);
        self.clock = clock;
    }

    /// Counts one call, attributed to `app` when known.
    pub fn record_call(&mut self, endpoint: Endpoint, app: Option<&str>) {
        *self.calls.entry(endpoint).or_default() += 1;
        if let Some(app) = app {
            let per_app = self.app_calls.entry(app.to_owned()).or_default();
            *per_app.entry(endpoint).or_default() += 1;
        }
    }

    /// Calls counted for `endpoint`.
    pub fn calls(&self, endpoint: Endpoint) -> u64 {
        self.calls.get(&endpoint).copied().unwrap_or(0)
    }

    /// WeChat's verdict on `value`, if it is a credential of the class asked for
    /// (`tokens`: access tokens, else tickets).
    pub fn lookup(&self, value: &str, tokens: bool) -> Lookup<'_> {
        let Some(cred) = self
            .creds
            .get(value)
            .filter(|c| c.kind.is_token() == tokens)
        else {
            return Lookup::Unknown;
        };
        let now = self.clock.now();
        let revoked = cred.revoked_at.filter(|&at| at <= cred.expires_at);
        match revoked {
            Some(at) if now >= at => Lookup::Replaced(cred),
            _ if now >= cred.expires_at => Lookup::Expired(cred),
            _ => Lookup::Valid(cred, cred.expires_at - now),
        }
    }

    /// The current credential of a slot with its remaining life, if it is still accepted.
    pub fn current(&self, owner: &Owner, kind: Kind) -> Option<(String, Duration)> {
        let value = self.current.get(&(owner.clone(), kind))?;
        match self.lookup(value, kind.is_token()) {
            Lookup::Valid(_, left) => Some((value.clone(), left)),
            _ => None,
        }
    }

    /// Issues a new credential for a slot, applying `replace` to the previous one.
    /// Returns the value and its lifetime.
    pub fn issue(
        &mut self,
        endpoint: Endpoint,
        owner: Owner,
        kind: Kind,
        replace: Replace,
    ) -> (String, Duration) {
        let now = self.clock.now();
        let lifetime = self.config.expires_in;
        let value = random_credential(if kind.is_token() {
            TOKEN_LEN
        } else {
            TICKET_LEN
        });
        let key = (owner.clone(), kind);
        if let Some(old) = self.current.get(&key).and_then(|v| self.creds.get_mut(v)) {
            let until = match replace {
                Replace::AfterGrace => Some(now + self.config.grace),
                Replace::Now => Some(now),
                Replace::Never => None,
            };
            // An earlier revocation stands: a second replacement never extends the grace.
            if let Some(until) = until {
                old.revoked_at = Some(old.revoked_at.map_or(until, |at| at.min(until)));
            }
        }
        let cred = Cred {
            owner,
            kind,
            expires_at: now + lifetime,
            revoked_at: None,
        };
        self.creds.insert(value.clone(), cred);
        self.current.insert(key, value.clone());
        *self.issued.entry(endpoint).or_default() += 1;
        (value, lifetime)
    }

    /// Makes every token and ticket of `owner` of one of `kinds` rejected from now on
    /// (an authorizer that withdrew its authorisation), and forgets the current ones.
    pub fn revoke_owner(&mut self, owner: &Owner, kinds: &[Kind]) {
        let now = self.clock.now();
        for cred in self.creds.values_mut() {
            if &cred.owner == owner && kinds.contains(&cred.kind) {
                cred.revoked_at = Some(cred.revoked_at.map_or(now, |at| at.min(now)));
            }
        }
        self.current
            .retain(|(o, kind), _| !(o == owner && kinds.contains(kind)));
    }

    /// Successful calls of `app` to `endpoint` today (WeChat's day).
    pub fn quota_used(&self, app: &str, endpoint: Endpoint) -> u64 {
        let today = self.clock.day();
        match self.quota.get(&(app.to_owned(), endpoint)) {
            Some(&(day, used)) if day == today => used,
            _ => 0,
        }
    }

    /// Is there quota left for one more successful call?
    pub fn quota_left(&self, app: &str, endpoint: Endpoint) -> bool {
        self.quota_used(app, endpoint) < self.config.daily_quota
    }

    /// Records one successful call against today's quota.
    pub fn spend_quota(&mut self, app: &str, endpoint: Endpoint) {
        let today = self.clock.day();
        let entry = self
            .quota
            .entry((app.to_owned(), endpoint))
            .or_insert((today, 0));
        if entry.0 != today {
            *entry = (today, 0);
        }
        entry.1 += 1;
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let by_path = |m: &HashMap<Endpoint, u64>| {
            m.iter()
                .map(|(e, n)| (e.path().to_owned(), *n))
                .collect::<BTreeMap<_, _>>()
        };
        Stats {
            // Every endpoint is listed, so a user sees what exists even before calling it.
            calls: Endpoint::ALL
                .iter()
                .map(|e| (e.path().to_owned(), self.calls(*e)))
                .collect(),
            apps: self
                .app_calls
                .iter()
                .map(|(app, m)| (app.clone(), by_path(m)))
                .collect(),
            issued: by_path(&self.issued),
            faults_pending: self.faults.pending(),
            clock_offset_secs: self.clock.offset().as_secs(),
            // Kept outside the state (see `in_flight.rs`); `Simulator::stats` fills them.
            in_flight: 0,
            max_in_flight: 0,
        }
    }
}

/// A random opaque credential of `len` URL-safe characters.
pub(super) fn random_credential(len: usize) -> String {
    let mut rng = rand::rng();
    // 64 symbols divide 256 evenly, so masking a random byte keeps the choice uniform.
    (0..len)
        .map(|_| char::from(ALPHABET[usize::from(rng.random::<u8>() & 63)]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(id: &str) -> Owner {
        Owner {
            id: id.to_owned(),
            secret: 0,
        }
    }

    #[test]
    fn credentials_are_long_url_safe_and_distinct() {
        let (a, b) = (random_credential(TOKEN_LEN), random_credential(TOKEN_LEN));
        assert_eq!(a.len(), TOKEN_LEN);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| ALPHABET.contains(&c)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_replacement_never_extends_the_first_ones_grace() {
        let mut state = State::new(SimConfig::default());
        let (first, _) = state.issue(Endpoint::Token, app("a"), Kind::Token, Replace::AfterGrace);
        state.issue(Endpoint::Token, app("a"), Kind::Token, Replace::AfterGrace);
        state.clock.advance(Duration::from_secs(200));
        state.issue(Endpoint::Token, app("a"), Kind::Token, Replace::AfterGrace);
        state.clock.advance(Duration::from_secs(100));
        assert!(matches!(state.lookup(&first, true), Lookup::Replaced(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn quota_is_counted_per_day_and_resets_the_next_day() {
        let mut state = State::new(SimConfig::default());
        state.spend_quota("a", Endpoint::Token);
        state.spend_quota("a", Endpoint::Token);
        assert_eq!(state.quota_used("a", Endpoint::Token), 2);
        assert_eq!(state.quota_used("a", Endpoint::GetTicket), 0);
        state.clock.advance(Duration::from_secs(86_400));
        assert_eq!(state.quota_used("a", Endpoint::Token), 0);
    }
}
