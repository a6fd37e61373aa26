//! A model of WeChat's token APIs, shared by every instance: each `/cgi-bin/token`
//! call issues a new token and the previous one stays valid for the grace; tickets
//! need a valid access_token; a daily quota (45009); and, during a flaky episode,
//! faults chosen by the seed.
//!
//! Faults (`Fault`), each decided when a call starts:
//! - `Busy`: errcode -1, nothing issued (a known outcome);
//! - `Slow`: issued on arrival, the reply comes after a delay that may pass the
//!   timeout (then the caller sees `Timeout` although a token was issued);
//! - `Drop`: issued, then the connection is closed (`Transport`);
//! - `Refused`: the connection cannot be made (`Connect`), never sent, nothing issued;
//! - `Garbage`: an unparsable reply (`Malformed`); on a coin flip chosen with the fault
//!   a token was issued first (a proxy mangled a good reply) or not;
//! - `BadGateway`: HTTP 502; on a coin flip a token was issued (the gateway timed out
//!   after forwarding) or not.
//!
//! Calls of a dead instance that already arrived at WeChat still act (the bytes were
//! sent); their replies are lost.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use reqwest::Url;
use wechat_token_server::config::SourceConfig;
use wechat_token_server::domain::wechat_day_at;
use wechat_token_server::refresh::TokenApi;
use wechat_token_server::refresh::api::Lookup;
use wechat_token_server::upstream::{self, Cause, Fetched};

use crate::scenario::Params;
use crate::world::{World, lock};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Token,
    Ticket,
}

pub struct Issued {
    pub value: String,
    /// 1-based, per app and kind: the issue order.
    pub seq: u64,
    pub issued: SystemTime,
    pub expires: SystemTime,
    /// When the next one was issued; valid for the grace after that.
    pub replaced: Option<SystemTime>,
    /// Issued to a call whose instance could not reach the store (unannounced), and
    /// the instance (index, era).
    pub unannounced_by: Option<(usize, u64)>,
}

#[derive(Default)]
pub struct Series {
    pub issued: Vec<Issued>,
    /// Calls that reached WeChat (issued or not).
    pub calls: u64,
    quota_day: u64,
    quota_used: u64,
}

pub struct AppModel {
    pub appid: String,
    pub secret: String,
    pub token: Series,
    pub ticket: Series,
}

pub struct WeChat {
    pub grace: Duration,
    pub lifetime: Duration,
    pub daily_quota: u64,
    pub apps: Vec<AppModel>,
    /// value -> (app index, kind, index into `issued`).
    by_value: BTreeMap<String, (usize, Kind, usize)>,
    pub probes: u64,
}

/// How a flaky WeChat treats one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Busy,
    Slow(Duration),
    Drop,
    Refused,
    Garbage { issued: bool },
    BadGateway { issued: bool },
}

impl WeChat {
    pub fn new(p: &Params, _start: SystemTime) -> Self {
        Self {
            grace: p.grace,
            lifetime: p.lifetime,
            daily_quota: p.daily_quota,
            apps: (0..p.apps)
                .map(|a| AppModel {
                    appid: format!("wxsim{a}"),
                    secret: format!("secret{a}"),
                    token: Series::default(),
                    ticket: Series::default(),
                })
                .collect(),
            by_value: BTreeMap::new(),
            probes: 0,
        }
    }

    fn series(&mut self, app: usize, kind: Kind) -> &mut Series {
        match kind {
            Kind::Token => &mut self.apps[app].token,
            Kind::Ticket => &mut self.apps[app].ticket,
        }
    }

    pub fn series_ref(&self, app: usize, kind: Kind) -> &Series {
        match kind {
            Kind::Token => &self.apps[app].token,
            Kind::Ticket => &self.apps[app].ticket,
        }
    }

    /// Issues a new token at `now` (the previous one enters its grace).
    pub fn issue(&mut self, app: usize, kind: Kind, now: SystemTime) -> (String, u64) {
        self.issue_by(app, kind, now, None)
    }

    pub fn issue_by(
        &mut self,
        app: usize,
        kind: Kind,
        now: SystemTime,
        unannounced_by: Option<(usize, u64)>,
    ) -> (String, u64) {
        let lifetime = self.lifetime;
        let appid = self.apps[app].appid.clone();
        let series = self.series(app, kind);
        if let Some(last) = series.issued.last_mut() {
            last.replaced.get_or_insert(now);
        }
        let seq = series.issued.len() as u64 + 1;
        let tag = match kind {
            Kind::Token => "AT",
            Kind::Ticket => "TK",
        };
        let value = format!(
            "{tag}-{appid}-{seq:05}-{:08x}",
            seq.wrapping_mul(0x9e37_79b9) as u32
        );
        series.issued.push(Issued {
            value: value.clone(),
            seq,
            issued: now,
            expires: now + lifetime,
            replaced: None,
            unannounced_by,
        });
        let index = series.issued.len() - 1;
        self.by_value.insert(value.clone(), (app, kind, index));
        (value, seq)
    }

    fn lookup(&self, value: &str) -> Option<(usize, Kind, &Issued)> {
        let &(app, kind, index) = self.by_value.get(value)?;
        Some((app, kind, &self.series_ref(app, kind).issued[index]))
    }

    /// Does WeChat accept `value` at `now`?
    pub fn valid(&self, value: &str, now: SystemTime) -> bool {
        self.lookup(value).is_some_and(|(_, _, t)| {
            now < t.expires && t.replaced.is_none_or(|r| now < r + self.grace)
        })
    }

    /// Why WeChat rejects `value` at `now`, for reports.
    pub fn describe(&self, value: &str, now: SystemTime) -> String {
        match self.lookup(value) {
            None => "never issued".into(),
            Some((_, _, t)) => {
                let ago = |at: SystemTime| now.duration_since(at).map_or(0.0, |d| d.as_secs_f64());
                format!(
                    "seq {} issued {:.3}s ago, expires in {:.3}s, replaced {}",
                    t.seq,
                    ago(t.issued),
                    t.expires
                        .duration_since(now)
                        .map_or(0.0, |d| d.as_secs_f64()),
                    t.replaced
                        .map_or("never".into(), |r| format!("{:.3}s ago", ago(r))),
                )
            }
        }
    }

    /// The token issued right after `value` (the one that replaced it), if any.
    pub fn successor(&self, value: &str) -> Option<&Issued> {
        let &(app, kind, index) = self.by_value.get(value)?;
        self.series_ref(app, kind).issued.get(index + 1)
    }

    /// The issue order of `value` (per app and kind).
    pub fn seq_of(&self, value: &str) -> Option<u64> {
        self.lookup(value).map(|(_, _, t)| t.seq)
    }

    pub fn calls(&self, app: usize, kind: Kind) -> u64 {
        self.series_ref(app, kind).calls
    }

    /// Tokens issued so far for `app`'s `kind`.
    pub fn issued(&self, app: usize, kind: Kind) -> u64 {
        self.series_ref(app, kind).issued.len() as u64
    }

    /// A call arriving: counts it and checks the quota. `Err` is WeChat's answer.
    fn admit(&mut self, app: usize, kind: Kind, now: SystemTime) -> Result<(), upstream::Error> {
        let quota = self.daily_quota;
        let series = self.series(app, kind);
        series.calls += 1;
        let day = wechat_day_at(now);
        if series.quota_day != day {
            series.quota_day = day;
            series.quota_used = 0;
        }
        if series.quota_used >= quota {
            return Err(wechat_error(45009, "reach max api daily quota limit"));
        }
        series.quota_used += 1;
        Ok(())
    }
}

fn wechat_error(errcode: i64, errmsg: &str) -> upstream::Error {
    upstream::Error::WeChat {
        errcode,
        errmsg: errmsg.into(),
    }
}

/// One instance's connection to WeChat.
pub struct ApiHandle {
    world: Arc<World>,
    inst: usize,
    era: u64,
}

impl ApiHandle {
    pub fn new(world: Arc<World>, inst: usize, era: u64) -> Self {
        Self { world, inst, era }
    }

    fn fault(&self) -> Fault {
        let w = &self.world;
        if !lock(&w.faults).wechat_flaky || !w.chance(w.p.wechat_fault_rate) {
            return Fault::None;
        }
        let timeout = w.config.refresh.upstream_timeout;
        match w.pick(6) {
            0 => Fault::Busy,
            1 => Fault::Slow(w.between(timeout / 4, timeout * 3)),
            2 => Fault::Drop,
            3 => Fault::Refused,
            4 => Fault::Garbage {
                issued: w.chance(0.5),
            },
            _ => Fault::BadGateway {
                issued: w.chance(0.5),
            },
        }
    }

    fn latency(&self) -> Duration {
        self.world
            .between(Duration::from_millis(5), Duration::from_millis(120))
    }

    async fn fetch_inner(
        &self,
        path: &str,
        appid: Option<String>,
        secret: Option<String>,
        access_token: Option<String>,
    ) -> Result<Fetched, upstream::Error> {
        let w = &self.world;
        let (i, era) = (self.inst, self.era);
        if w.crash_point(i, era, 1.0, "before a WeChat call") {
            return Err(upstream::Error::Connect(Cause::message("process is dead")));
        }
        let fault = self.fault();
        if fault == Fault::Refused {
            tokio::time::sleep(self.latency()).await;
            w.log(|l| {
                let _ = write!(l, "wechat {path} from i{i}.{era}: connection refused");
            });
            return Err(upstream::Error::Connect(Cause::message(
                "simulated: connection refused",
            )));
        }
        tokio::time::sleep(self.latency()).await;
        // Arrival: WeChat acts, whatever becomes of the caller.
        let now = w.now_wall();
        let answer = {
            let mut wx = lock(&w.wechat);
            let kind = if path == "/cgi-bin/token" {
                Kind::Token
            } else {
                Kind::Ticket
            };
            let app = match kind {
                Kind::Token => appid
                    .as_deref()
                    .and_then(|id| wx.apps.iter().position(|a| a.appid == id)),
                Kind::Ticket => access_token
                    .as_deref()
                    .and_then(|t| wx.lookup(t).map(|(app, _, _)| app)),
            };
            match app {
                None if kind == Kind::Token => Err(wechat_error(40013, "invalid appid")),
                None => Err(wechat_error(
                    40001,
                    "invalid credential, access_token is invalid",
                )),
                Some(app) => {
                    let admitted = wx.admit(app, kind, now);
                    match admitted {
                        Err(e) => Err(e),
                        Ok(())
                            if kind == Kind::Token
                                && secret.as_deref() != Some(wx.apps[app].secret.as_str()) =>
                        {
                            Err(wechat_error(40125, "invalid appsecret"))
                        }
                        Ok(())
                            if kind == Kind::Ticket
                                && !access_token.as_deref().is_some_and(|t| wx.valid(t, now)) =>
                        {
                            Err(wechat_error(
                                40001,
                                "invalid credential, access_token is invalid or not latest",
                            ))
                        }
                        Ok(()) if fault == Fault::Busy => Err(wechat_error(-1, "system error")),
                        Ok(())
                            if matches!(
                                fault,
                                Fault::Garbage { issued: false }
                                    | Fault::BadGateway { issued: false }
                            ) =>
                        {
                            Ok(None)
                        }
                        Ok(()) => {
                            let unannounced = (!w.store_reachable(i)).then_some((i, era));
                            Ok(Some(wx.issue_by(app, kind, now, unannounced)))
                        }
                    }
                }
            }
        };
        w.log(|l| {
            let _ = write!(l, "wechat {path} from i{i}.{era} ({fault:?}): ");
            match &answer {
                Ok(Some((value, seq))) => {
                    let _ = write!(l, "issued seq {seq} {value}");
                }
                Ok(None) => l.push_str("nothing issued"),
                Err(e) => {
                    let _ = write!(l, "{e}");
                }
            }
        });
        let delay = match fault {
            Fault::Slow(delay) => delay,
            _ => self.latency(),
        };
        tokio::time::sleep(delay).await;
        if w.crash_point(i, era, 1.0, "after a WeChat call") {
            return Err(upstream::Error::Transport(Cause::message(
                "process is dead",
            )));
        }
        match fault {
            Fault::Drop => {
                return Err(upstream::Error::Transport(Cause::message(
                    "simulated: connection closed without a reply",
                )));
            }
            Fault::Garbage { .. } => {
                return Err(upstream::Error::Malformed(
                    "simulated: <html>garbage".into(),
                ));
            }
            Fault::BadGateway { .. } => return Err(upstream::Error::Status(502)),
            _ => {}
        }
        let lifetime = w.p.lifetime;
        answer.map(|issued| {
            let (value, _) = issued.expect("every fault that issues nothing was handled above");
            Fetched {
                value,
                expires_in: Some(lifetime),
                rotated: None,
            }
        })
    }
}

#[async_trait]
impl TokenApi for ApiHandle {
    async fn fetch(
        &self,
        source: &SourceConfig,
        lookup: Lookup<'_>,
        _forced: bool,
    ) -> Result<Fetched, upstream::Error> {
        let path = source.urls[0].path().to_owned();
        let arg = |name: &str| {
            source
                .args
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, t)| t.render(&|n| lookup(n)).ok())
        };
        let (appid, secret, access_token) = (arg("appid"), arg("secret"), arg("access_token"));
        let timeout = self.world.config.refresh.upstream_timeout;
        match tokio::time::timeout(
            timeout,
            self.fetch_inner(&path, appid, secret, access_token),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => {
                let (i, era) = (self.inst, self.era);
                self.world.log(|l| {
                    let _ = write!(l, "wechat {path} from i{i}.{era}: timed out");
                });
                Err(upstream::Error::Timeout)
            }
        }
    }

    async fn probe(&self, urls: &[Url], access_token: &str) -> Result<bool, upstream::Error> {
        let w = &self.world;
        let (i, era) = (self.inst, self.era);
        let path = urls.first().map_or("", |u| u.path()).to_owned();
        let work = async {
            if w.crash_point(i, era, 1.0, "before a probe") {
                return Err(upstream::Error::Connect(Cause::message("process is dead")));
            }
            let fault = self.fault();
            tokio::time::sleep(self.latency()).await;
            let valid = {
                let mut wx = lock(&w.wechat);
                wx.probes += 1;
                wx.valid(access_token, w.now_wall())
            };
            let delay = match fault {
                Fault::Slow(delay) => delay,
                _ => self.latency(),
            };
            tokio::time::sleep(delay).await;
            w.log(|l| {
                let _ = write!(
                    l,
                    "wechat {path} probe from i{i}.{era} ({fault:?}): valid={valid}"
                );
            });
            match fault {
                Fault::None | Fault::Slow(_) => Ok(valid),
                Fault::Busy => Err(wechat_error(-1, "system error")),
                Fault::Refused => Err(upstream::Error::Connect(Cause::message("refused"))),
                Fault::Drop => Err(upstream::Error::Transport(Cause::message("closed"))),
                Fault::Garbage { .. } => Err(upstream::Error::Malformed("garbage".into())),
                Fault::BadGateway { .. } => Err(upstream::Error::Status(502)),
            }
        };
        let timeout = w.config.refresh.upstream_timeout;
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or(Err(upstream::Error::Timeout))
    }
}
