//! The WeChat simulator over real HTTP: one test per WeChat rule, admin route and fault.
//!
//! Time-dependent rules move the simulator's clock with `advance`; nothing sleeps.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use wechat_token_server::simulator::{
    DEMO_APPID, DEMO_CORPID, DEMO_CORPSECRET, DEMO_SECRET, SimConfig, SimHandle, Simulator,
};

/// A simulator on a free port and a client for it.
struct Sim {
    handle: SimHandle,
    http: reqwest::Client,
}

async fn spawn(config: SimConfig) -> Sim {
    let handle = Simulator::spawn(config).await.expect("bind the simulator");
    Sim {
        handle,
        http: reqwest::Client::new(),
    }
}

async fn spawn_default() -> Sim {
    spawn(SimConfig::default()).await
}

const GRACE: u64 = 300;
const LIFE: u64 = 7200;
/// Real seconds a test may take between issuing a credential and checking it. The
/// simulator's clock runs on (plus what tests advance), so "still valid" checks stop
/// this far short of a deadline, and reported lifetimes may be this much lower.
const SLACK: u64 = 5;

/// A reported remaining life, `want` at most and at most [`SLACK`] less.
fn assert_life(got: u64, want: u64) {
    assert!(
        got <= want && got + SLACK >= want,
        "expires_in {got}, expected about {want}"
    );
}

impl Sim {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.handle.url())
    }

    /// GET, expecting a JSON body; returns status and body.
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let resp = self.http.get(self.url(path)).send().await.expect("GET");
        let status = resp.status();
        (status, resp.json().await.expect("a JSON body"))
    }

    /// POST a body, expecting JSON back.
    async fn post(&self, path: &str, body: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .body(body.to_owned())
            .send()
            .await
            .expect("POST");
        let status = resp.status();
        (status, resp.json().await.expect("a JSON body"))
    }

    /// A WeChat call: HTTP 200 and JSON, as WeChat replies even to errors.
    async fn wx(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        body
    }

    async fn wx_post(&self, path: &str, body: Value) -> Value {
        let (status, body) = self.post(path, &body.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        body
    }

    async fn errcode(&self, path: &str) -> i64 {
        self.wx(path).await["errcode"].as_i64().unwrap_or(0)
    }

    /// A new `/cgi-bin/token` token of the demo app.
    async fn token(&self) -> String {
        let path = format!(
            "/cgi-bin/token?grant_type=client_credential&appid={DEMO_APPID}&secret={DEMO_SECRET}"
        );
        let body = self.wx(&path).await;
        body["access_token"].as_str().expect("a token").to_owned()
    }

    async fn stable(&self, force: bool) -> (String, u64) {
        let body = json!({"grant_type": "client_credential", "appid": DEMO_APPID, "secret": DEMO_SECRET, "force_refresh": force});
        let reply = self.wx_post("/cgi-bin/stable_token", body).await;
        let token = reply["access_token"]
            .as_str()
            .expect("a stable token")
            .to_owned();
        (token, reply["expires_in"].as_u64().expect("expires_in"))
    }

    async fn ticket(&self, token: &str, kind: &str) -> String {
        let body = self
            .wx(&format!(
                "/cgi-bin/ticket/getticket?access_token={token}&type={kind}"
            ))
            .await;
        assert_eq!(
            (body["errcode"].as_i64(), body["errmsg"].as_str()),
            (Some(0), Some("ok")),
            "{body}"
        );
        body["ticket"].as_str().expect("a ticket").to_owned()
    }

    async fn corp_token(&self) -> String {
        let body = self
            .wx(&format!(
                "/cgi-bin/gettoken?corpid={DEMO_CORPID}&corpsecret={DEMO_CORPSECRET}"
            ))
            .await;
        assert_eq!(
            (body["errcode"].as_i64(), body["errmsg"].as_str()),
            (Some(0), Some("ok")),
            "{body}"
        );
        assert_eq!(body["expires_in"], LIFE);
        body["access_token"]
            .as_str()
            .expect("a corp token")
            .to_owned()
    }

    /// What `/cgi-bin/getcallbackip` says about a token: 0 when accepted.
    async fn probe(&self, token: &str) -> i64 {
        self.errcode(&format!("/cgi-bin/getcallbackip?access_token={token}"))
            .await
    }

    async fn valid(&self, query: &str) -> Value {
        let (status, body) = self.get(&format!("/sim/valid?{query}")).await;
        assert_eq!(status, StatusCode::OK);
        body
    }

    async fn fault(&self, fault: Value) {
        let (status, body) = self.post("/sim/faults", &fault.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn stats(&self) -> Value {
        self.get("/sim/stats").await.1
    }

    fn advance(&self, secs: u64) {
        self.handle.sim.advance(Duration::from_secs(secs));
    }
}

#[tokio::test]
async fn each_token_call_issues_a_new_token_and_the_previous_one_lives_only_through_its_grace() {
    let sim = spawn_default().await;
    let first = sim.token().await;
    assert!(first.len() >= 100, "tokens are long opaque strings");
    let second = sim.token().await;
    assert_ne!(first, second);
    assert_eq!(sim.probe(&first).await, 0);
    sim.advance(GRACE - SLACK);
    assert_eq!(sim.probe(&first).await, 0, "still in its grace");
    sim.advance(SLACK);
    assert_eq!(sim.probe(&first).await, 40001, "grace is over");
    assert_eq!(sim.probe(&second).await, 0);
    assert_eq!(
        sim.valid(&format!("access_token={first}")).await["reason"],
        "replaced"
    );
    assert!(!sim.handle.sim.access_token_valid(&first));
    assert!(sim.handle.sim.access_token_valid(&second));
}

#[tokio::test]
async fn a_token_past_its_lifetime_is_rejected_with_42001() {
    let sim = spawn_default().await;
    let token = sim.token().await;
    sim.advance(LIFE - SLACK);
    let valid = sim.valid(&format!("access_token={token}")).await;
    assert_eq!(valid["valid"], true);
    assert_life(valid["expires_in"].as_u64().unwrap_or(u64::MAX), SLACK);
    sim.advance(SLACK);
    assert_eq!(sim.probe(&token).await, 42001);
    let path = format!("/cgi-bin/ticket/getticket?access_token={token}&type=jsapi");
    assert_eq!(sim.errcode(&path).await, 42001);
    assert_eq!(
        sim.valid(&format!("access_token={token}")).await["reason"],
        "expired"
    );
}

#[tokio::test]
async fn the_clock_can_be_advanced_over_http() {
    let sim = spawn_default().await;
    let token = sim.token().await;
    let (status, body) = sim
        .post("/sim/advance", &json!({"seconds": LIFE}).to_string())
        .await;
    assert_eq!(
        (status, body["clock_offset_secs"].as_u64()),
        (StatusCode::OK, Some(LIFE))
    );
    assert_eq!(sim.probe(&token).await, 42001);
    let (status, body) = sim.post("/sim/advance", r#"{"seconds": "soon"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("seconds")),
        "{body}"
    );
}

#[tokio::test]
async fn a_ticket_needs_a_currently_valid_access_token() {
    let sim = spawn_default().await;
    let getticket = |t: &str| format!("/cgi-bin/ticket/getticket?access_token={t}&type=jsapi");
    assert_eq!(sim.errcode(&getticket("never-issued")).await, 40014);
    assert_eq!(
        sim.errcode("/cgi-bin/ticket/getticket?type=jsapi").await,
        41001
    );
    let old = sim.token().await;
    let new = sim.token().await;
    sim.advance(GRACE);
    assert_eq!(sim.errcode(&getticket(&old)).await, 40001);
    let ticket = sim.ticket(&new, "jsapi").await;
    assert!(sim.handle.sim.ticket_valid(&ticket));
    sim.advance(LIFE);
    assert_eq!(sim.errcode(&getticket(&new)).await, 42001);
    assert_eq!(
        sim.errcode(&format!("/cgi-bin/ticket/getticket?access_token={new}"))
            .await,
        42001
    );
    let stats = sim.stats().await;
    assert_eq!(
        stats["apps"][DEMO_APPID]["/cgi-bin/ticket/getticket"], 4,
        "calls with issued tokens count for their app"
    );
}

#[tokio::test]
async fn a_new_ticket_leaves_the_previous_one_valid_for_the_grace_only() {
    let sim = spawn_default().await;
    let token = sim.token().await;
    let first = sim.ticket(&token, "jsapi").await;
    let second = sim.ticket(&token, "jsapi").await;
    assert_ne!(first, second);
    sim.advance(GRACE - SLACK);
    assert_eq!(sim.valid(&format!("ticket={first}")).await["valid"], true);
    sim.advance(SLACK);
    let verdict = sim.valid(&format!("ticket={first}")).await;
    assert_eq!(
        (verdict["valid"].as_bool(), verdict["reason"].as_str()),
        (Some(false), Some("replaced"))
    );
    assert!(sim.handle.sim.ticket_valid(&second));
    assert!(
        !sim.handle.sim.access_token_valid(&second),
        "a ticket is not an access_token"
    );
}

#[tokio::test]
async fn jsapi_and_wx_card_tickets_are_separate_and_other_types_are_invalid_args() {
    let sim = spawn_default().await;
    let token = sim.token().await;
    let jsapi = sim.ticket(&token, "jsapi").await;
    let card = sim.ticket(&token, "wx_card").await;
    sim.ticket(&token, "wx_card").await;
    sim.advance(GRACE);
    assert!(
        sim.handle.sim.ticket_valid(&jsapi),
        "a wx_card ticket does not replace the jsapi one"
    );
    assert!(!sim.handle.sim.ticket_valid(&card));
    let path = format!("/cgi-bin/ticket/getticket?access_token={token}&type=nope");
    assert_eq!(sim.errcode(&path).await, 40097);
    let verdict = sim.valid(&format!("ticket={jsapi}")).await;
    assert_eq!(
        (verdict["kind"].as_str(), verdict["app"].as_str()),
        (Some("jsapi_ticket"), Some(DEMO_APPID))
    );
}

#[tokio::test]
async fn stable_token_in_normal_mode_returns_the_current_token_with_its_remaining_life() {
    let sim = spawn_default().await;
    let (token, life) = sim.stable(false).await;
    assert_eq!(life, LIFE);
    sim.advance(1000);
    let (same, life) = sim.stable(false).await;
    assert_eq!(same, token);
    assert_life(life, LIFE - 1000);
    let plain = sim.token().await;
    assert_eq!(
        sim.probe(&token).await,
        0,
        "a /cgi-bin/token call leaves the stable token alone"
    );
    assert_eq!(sim.stable(false).await.0, token);
    assert_eq!(
        sim.probe(&plain).await,
        0,
        "and the stable token leaves it alone"
    );
    assert_eq!(sim.stats().await["issued"]["/cgi-bin/stable_token"], 1);
}

#[tokio::test]
async fn stable_token_in_normal_mode_renews_in_the_last_five_minutes_and_the_old_one_lives_to_its_expiry()
 {
    let sim = spawn_default().await;
    let (old, _) = sim.stable(false).await;
    sim.advance(LIFE - GRACE - 2 * SLACK);
    let (same, life) = sim.stable(false).await;
    assert_eq!(same, old);
    assert_life(life, GRACE + 2 * SLACK);
    sim.advance(2 * SLACK);
    let (new, life) = sim.stable(false).await;
    assert_ne!(new, old);
    assert_eq!(life, LIFE);
    sim.advance(GRACE - 2 * SLACK);
    assert_eq!(sim.probe(&old).await, 0, "valid until its own expiry");
    sim.advance(2 * SLACK);
    assert_eq!(sim.probe(&old).await, 42001);
    assert_eq!(sim.stable(false).await.0, new);
}

#[tokio::test]
async fn forced_stable_token_replaces_the_token_at_once_but_only_30_seconds_apart() {
    let sim = spawn_default().await;
    let (first, _) = sim.stable(false).await;
    let (second, life) = sim.stable(true).await;
    assert_ne!(first, second);
    assert_eq!(life, LIFE);
    assert_eq!(
        sim.probe(&first).await,
        40001,
        "no grace after a forced refresh"
    );
    sim.advance(30 - SLACK);
    let (same, life) = sim.stable(true).await;
    assert_eq!(same, second, "too soon: the current token");
    assert_life(life, LIFE - 30 + SLACK);
    assert_eq!(sim.probe(&second).await, 0);
    sim.advance(SLACK);
    let (third, _) = sim.stable(true).await;
    assert_ne!(third, second);
    assert_eq!(sim.probe(&second).await, 40001);
}

#[tokio::test]
async fn forced_stable_token_is_limited_to_20_a_day_and_the_limit_resets_with_wechats_day() {
    let sim = spawn_default().await;
    let mut tokens = Vec::new();
    for _ in 0..20 {
        tokens.push(sim.stable(true).await.0);
        sim.advance(30);
    }
    tokens.dedup();
    assert_eq!(tokens.len(), 20, "each of the 20 forced calls refreshed");
    let last = tokens.last().cloned().unwrap_or_default();
    assert_eq!(
        sim.stable(true).await.0,
        last,
        "the 21st forced call does not refresh"
    );
    sim.advance(86_400);
    let (next_day, _) = sim.stable(true).await;
    assert_ne!(next_day, last, "a new WeChat day allows forced calls again");
}

#[tokio::test]
async fn wecom_gettoken_issues_a_new_token_per_call_under_the_grace_rule() {
    let sim = spawn_default().await;
    let first = sim.corp_token().await;
    let second = sim.corp_token().await;
    assert_ne!(first, second);
    let corp_ticket = |t: &str| format!("/cgi-bin/get_jsapi_ticket?access_token={t}");
    assert_eq!(sim.errcode(&corp_ticket(&first)).await, 0);
    sim.advance(GRACE);
    assert_eq!(sim.errcode(&corp_ticket(&first)).await, 40001);
    assert_eq!(
        sim.probe(&second).await,
        40014,
        "a WeCom token is not an Official Account token"
    );
    sim.advance(LIFE);
    assert_eq!(sim.errcode(&corp_ticket(&second)).await, 42001);
}

#[tokio::test]
async fn wecom_corp_and_agent_tickets_need_a_valid_wecom_token() {
    let sim = spawn_default().await;
    let corp = sim.corp_token().await;
    let reply = sim
        .wx(&format!("/cgi-bin/get_jsapi_ticket?access_token={corp}"))
        .await;
    assert_eq!(
        (reply["errcode"].as_i64(), reply["expires_in"].as_u64()),
        (Some(0), Some(LIFE))
    );
    let corp_ticket = reply["ticket"].as_str().unwrap_or_default().to_owned();
    let agent = format!("/cgi-bin/ticket/get?access_token={corp}&type=agent_config");
    let reply = sim.wx(&agent).await;
    assert_eq!(
        (reply["errcode"].as_i64(), reply["errmsg"].as_str()),
        (Some(0), Some("ok"))
    );
    let agent_ticket = reply["ticket"].as_str().unwrap_or_default().to_owned();
    assert!(
        sim.handle.sim.ticket_valid(&corp_ticket) && sim.handle.sim.ticket_valid(&agent_ticket)
    );
    assert_ne!(corp_ticket, agent_ticket);
    assert_eq!(
        sim.errcode(&format!(
            "/cgi-bin/ticket/get?access_token={corp}&type=jsapi"
        ))
        .await,
        40097
    );
    let mp = sim.token().await;
    assert_eq!(
        sim.errcode(&format!("/cgi-bin/get_jsapi_ticket?access_token={mp}"))
            .await,
        40014
    );
    assert_eq!(
        sim.errcode(&format!(
            "/cgi-bin/ticket/get?access_token={mp}&type=agent_config"
        ))
        .await,
        40014
    );
    assert_eq!(sim.errcode("/cgi-bin/get_jsapi_ticket").await, 41001);
    assert_eq!(
        sim.errcode("/cgi-bin/ticket/get?type=agent_config").await,
        41001
    );
}

#[tokio::test]
async fn each_secret_of_a_corp_has_its_own_token() {
    let config = SimConfig {
        corps: vec![
            ("ww1".into(), "contacts".into()),
            ("ww1".into(), "agent".into()),
        ],
        ..SimConfig::default()
    };
    let sim = spawn(config).await;
    let get = |secret: &str| format!("/cgi-bin/gettoken?corpid=ww1&corpsecret={secret}");
    let contacts = sim.wx(&get("contacts")).await["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    sim.wx(&get("agent")).await;
    sim.advance(GRACE);
    assert!(
        sim.handle.sim.access_token_valid(&contacts),
        "another secret's token does not replace it"
    );
    let demo = format!("/cgi-bin/gettoken?corpid={DEMO_CORPID}&corpsecret={DEMO_CORPSECRET}");
    assert_eq!(
        sim.errcode(&demo).await,
        40013,
        "given corps replace the demo corp"
    );
}

#[tokio::test]
async fn each_app_has_a_daily_quota_per_api_answered_with_45009_until_wechats_next_day() {
    let config = SimConfig {
        apps: vec![("wx1".into(), "s1".into()), ("wx2".into(), "s2".into())],
        daily_quota: 3,
        ..SimConfig::default()
    };
    let sim = spawn(config).await;
    let token = |app: &str, secret: &str| {
        format!("/cgi-bin/token?grant_type=client_credential&appid={app}&secret={secret}")
    };
    assert_eq!(sim.errcode(&token("wx1", "wrong")).await, 40125);
    let mut last = String::new();
    for _ in 0..3 {
        last = sim.wx(&token("wx1", "s1")).await["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
    }
    let refused = sim.wx(&token("wx1", "s1")).await;
    assert_eq!(
        refused,
        json!({"errcode": 45009, "errmsg": "reach max api daily quota limit"})
    );
    assert_eq!(
        sim.errcode(&token("wx2", "s2")).await,
        0,
        "another app has its own quota"
    );
    let quota = sim
        .wx_post(
            &format!("/cgi-bin/openapi/quota/get?access_token={last}"),
            json!({"cgi_path": "/cgi-bin/token"}),
        )
        .await;
    assert_eq!(
        quota["quota"],
        json!({"daily_limit": 3, "used": 3, "remain": 0}),
        "failed calls use no quota"
    );
    assert_eq!(
        sim.errcode(&format!(
            "/cgi-bin/ticket/getticket?access_token={last}&type=jsapi"
        ))
        .await,
        0,
        "and another API too"
    );
    sim.advance(86_400);
    assert_eq!(
        sim.errcode(&token("wx1", "s1")).await,
        0,
        "a new WeChat day"
    );
    let demo = format!(
        "/cgi-bin/token?grant_type=client_credential&appid={DEMO_APPID}&secret={DEMO_SECRET}"
    );
    assert_eq!(
        sim.errcode(&demo).await,
        40013,
        "given apps replace the demo app"
    );
}

#[tokio::test]
async fn token_errors_use_wechats_codes_with_http_200() {
    let sim = spawn_default().await;
    let (a, s) = (DEMO_APPID, DEMO_SECRET);
    let cases = [
        (format!("/cgi-bin/token?appid={a}&secret={s}"), 40002),
        (
            format!("/cgi-bin/token?grant_type=password&appid={a}&secret={s}"),
            40002,
        ),
        (
            format!("/cgi-bin/token?grant_type=client_credential&secret={s}"),
            41002,
        ),
        (
            format!("/cgi-bin/token?grant_type=client_credential&appid={a}"),
            41004,
        ),
        (
            format!("/cgi-bin/token?grant_type=client_credential&appid={a}&secret="),
            41004,
        ),
        (
            format!("/cgi-bin/token?grant_type=client_credential&appid=wx_other&secret={s}"),
            40013,
        ),
        (
            format!("/cgi-bin/token?grant_type=client_credential&appid={a}&secret=wrong"),
            40125,
        ),
        (
            format!("/cgi-bin/gettoken?corpsecret={DEMO_CORPSECRET}"),
            41002,
        ),
        (format!("/cgi-bin/gettoken?corpid={DEMO_CORPID}"), 41004),
        (
            format!("/cgi-bin/gettoken?corpid=ww_other&corpsecret={DEMO_CORPSECRET}"),
            40013,
        ),
        (
            format!("/cgi-bin/gettoken?corpid={DEMO_CORPID}&corpsecret=wrong"),
            40001,
        ),
        ("/cgi-bin/getcallbackip".to_owned(), 41001),
        ("/cgi-bin/getcallbackip?access_token=%ZZ%".to_owned(), 40014),
    ];
    for (path, code) in cases {
        let body = sim.wx(&path).await;
        assert_eq!(body["errcode"], code, "{path}: {body}");
        assert!(
            body["errmsg"].as_str().is_some_and(|m| !m.is_empty()),
            "{path}: {body}"
        );
    }
    let cases = [
        (json!({"appid": a, "secret": s}), 40002),
        (
            json!({"grant_type": "client_credential", "secret": s}),
            41002,
        ),
        (
            json!({"grant_type": "client_credential", "appid": a}),
            41004,
        ),
        (
            json!({"grant_type": "client_credential", "appid": "wx_other", "secret": s}),
            40013,
        ),
        (
            json!({"grant_type": "client_credential", "appid": a, "secret": "wrong"}),
            40125,
        ),
        (
            json!({"grant_type": "client_credential", "appid": a, "secret": s, "force_refresh": "yes"}),
            47001,
        ),
        (
            json!({"grant_type": "client_credential", "appid": 42, "secret": s}),
            47001,
        ),
        (json!(["not", "an", "object"]), 47001),
    ];
    for (body, code) in cases {
        let reply = sim.wx_post("/cgi-bin/stable_token", body.clone()).await;
        assert_eq!(reply["errcode"], code, "{body}: {reply}");
    }
    let (status, body) = sim.post("/cgi-bin/stable_token", "{not json").await;
    assert_eq!(
        (status, body["errcode"].as_i64()),
        (StatusCode::OK, Some(47001))
    );
}

#[tokio::test]
async fn quota_get_reads_an_apis_quota_and_checks_its_arguments() {
    let sim = spawn_default().await;
    let token = sim.token().await;
    let path = format!("/cgi-bin/openapi/quota/get?access_token={token}");
    let quota = sim
        .wx_post(&path, json!({"cgi_path": "/cgi-bin/token"}))
        .await;
    assert_eq!(
        quota["quota"],
        json!({"daily_limit": 2000, "used": 1, "remain": 1999})
    );
    assert_eq!(
        sim.wx_post(&path, json!({"cgi_path": "/cgi-bin/nope"}))
            .await["errcode"],
        76021
    );
    assert_eq!(sim.wx_post(&path, json!({})).await["errcode"], 40097);
    let no_token = sim
        .wx_post(
            "/cgi-bin/openapi/quota/get",
            json!({"cgi_path": "/cgi-bin/token"}),
        )
        .await;
    assert_eq!(no_token["errcode"], 41001);
}

#[tokio::test]
async fn an_errcode_fault_answers_wechats_error_and_issues_nothing() {
    let sim = spawn_default().await;
    sim.fault(json!({"endpoint": "/cgi-bin/token", "count": 2, "errcode": -1}))
        .await;
    let path = format!(
        "/cgi-bin/token?grant_type=client_credential&appid={DEMO_APPID}&secret={DEMO_SECRET}"
    );
    for _ in 0..2 {
        assert_eq!(
            sim.wx(&path).await,
            json!({"errcode": -1, "errmsg": "system error"})
        );
    }
    let token = sim.token().await;
    let stats = sim.stats().await;
    assert_eq!(
        (
            stats["calls"]["/cgi-bin/token"].as_u64(),
            stats["issued"]["/cgi-bin/token"].as_u64()
        ),
        (Some(3), Some(1))
    );
    let quota = sim
        .wx_post(
            &format!("/cgi-bin/openapi/quota/get?access_token={token}"),
            json!({"cgi_path": "/cgi-bin/token"}),
        )
        .await;
    assert_eq!(quota["quota"]["used"], 1, "faulted calls use no quota");
    sim.fault(
        json!({"endpoint": "/cgi-bin/token", "errcode": 40164, "errmsg": "invalid ip 1.2.3.4"}),
    )
    .await;
    assert_eq!(
        sim.wx(&path).await,
        json!({"errcode": 40164, "errmsg": "invalid ip 1.2.3.4"})
    );
}

#[tokio::test]
async fn an_http_status_fault_returns_that_status_with_an_html_body() {
    let sim = spawn_default().await;
    sim.fault(json!({"endpoint": "/cgi-bin/stable_token", "http_status": 502}))
        .await;
    let body =
        json!({"grant_type": "client_credential", "appid": DEMO_APPID, "secret": DEMO_SECRET});
    let resp = sim
        .http
        .post(sim.url("/cgi-bin/stable_token"))
        .body(body.to_string())
        .send()
        .await
        .expect("a reply");
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let text = resp.text().await.expect("a body");
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    sim.stable(false).await;
    assert_eq!(sim.stats().await["issued"]["/cgi-bin/stable_token"], 1);
}

#[tokio::test]
async fn a_delay_fault_holds_the_reply_back_but_still_serves_the_call() {
    let sim = spawn_default().await;
    sim.fault(json!({"endpoint": "/cgi-bin/token", "delay_ms": 300}))
        .await;
    let started = Instant::now();
    let token = sim.token().await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert!(sim.handle.sim.access_token_valid(&token));
    let started = Instant::now();
    sim.token().await;
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "only the next call is delayed"
    );
}

#[tokio::test]
async fn a_drop_fault_closes_the_connection_without_a_response() {
    let sim = spawn_default().await;
    sim.fault(json!({"endpoint": "/cgi-bin/token", "drop": true}))
        .await;
    let path = format!(
        "/cgi-bin/token?grant_type=client_credential&appid={DEMO_APPID}&secret={DEMO_SECRET}"
    );
    let result = sim.http.get(sim.url(&path)).send().await;
    assert!(
        result.is_err(),
        "expected a connection error, got {result:?}"
    );
    sim.token().await;
    let stats = sim.stats().await;
    assert_eq!(
        stats["calls"]["/cgi-bin/token"], 2,
        "the client did not retry, and the dropped call counts"
    );
    assert_eq!(stats["issued"]["/cgi-bin/token"], 1);
}

#[tokio::test]
async fn a_garbage_fault_returns_200_with_a_body_that_is_not_json() {
    let sim = spawn_default().await;
    let token = sim.token().await;
    sim.fault(json!({"endpoint": "/cgi-bin/ticket/getticket", "garbage": true}))
        .await;
    let resp = sim
        .http
        .get(sim.url(&format!(
            "/cgi-bin/ticket/getticket?access_token={token}&type=jsapi"
        )))
        .send()
        .await
        .expect("a reply");
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.expect("a body");
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    assert_eq!(
        sim.stats().await["issued"].get("/cgi-bin/ticket/getticket"),
        None
    );
}

#[tokio::test]
async fn faults_are_used_in_order_and_only_by_their_endpoint() {
    let sim = spawn_default().await;
    sim.fault(json!({"endpoint": "/cgi-bin/token", "errcode": -1}))
        .await;
    sim.fault(json!({"endpoint": "/cgi-bin/token", "errcode": 45011}))
        .await;
    assert_eq!(sim.stats().await["faults_pending"]["/cgi-bin/token"], 2);
    sim.corp_token().await;
    let path = format!(
        "/cgi-bin/token?grant_type=client_credential&appid={DEMO_APPID}&secret={DEMO_SECRET}"
    );
    assert_eq!(sim.errcode(&path).await, -1);
    assert_eq!(sim.errcode(&path).await, 45011);
    assert_eq!(sim.errcode(&path).await, 0);
}

#[tokio::test]
async fn a_bad_fault_request_is_refused_with_400_and_a_message() {
    let sim = spawn_default().await;
    let cases = [
        r#"{"endpoint": "/cgi-bin/nope", "drop": true}"#,
        r#"{"endpoint": "/cgi-bin/token"}"#,
        r#"{"endpoint": "/cgi-bin/token", "drop": true, "garbage": true}"#,
        r#"{"endpoint": "/cgi-bin/token", "http_status": 200}"#,
        r#"{"endpoint": "/cgi-bin/token", "count": 0, "errcode": -1}"#,
        r#"{"endpoint": "/cgi-bin/token", "errcode": -1, "typo": 1}"#,
        "not json",
    ];
    for body in cases {
        let (status, reply) = sim.post("/sim/faults", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply["error"], "bad_fault");
        assert!(
            reply["message"].as_str().is_some_and(|m| m.len() > 10),
            "{reply}"
        );
    }
    assert_eq!(sim.stats().await["faults_pending"], json!({}));
}

#[tokio::test]
async fn reset_forgets_tokens_counters_quota_and_faults() {
    let sim = spawn(SimConfig {
        daily_quota: 1,
        ..SimConfig::default()
    })
    .await;
    let token = sim.token().await;
    sim.fault(json!({"endpoint": "/cgi-bin/token", "count": 5, "drop": true}))
        .await;
    let (status, _) = sim.post("/sim/reset", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sim.probe(&token).await, 40014, "forgotten");
    let stats = sim.stats().await;
    assert_eq!(
        stats["calls"]["/cgi-bin/getcallbackip"], 1,
        "counters restarted"
    );
    assert_eq!(stats["calls"]["/cgi-bin/token"], 0);
    assert_eq!(stats["faults_pending"], json!({}));
    sim.token().await;
}

#[tokio::test]
async fn fifty_concurrent_token_calls_issue_fifty_tokens_all_counted_and_one_survives_the_grace() {
    let sim = spawn_default().await;
    let url = sim.url(&format!(
        "/cgi-bin/token?grant_type=client_credential&appid={DEMO_APPID}&secret={DEMO_SECRET}"
    ));
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (http, url) = (sim.http.clone(), url.clone());
        calls.spawn(async move {
            let body: Value = http
                .get(url)
                .send()
                .await
                .expect("GET")
                .json()
                .await
                .expect("JSON");
            body["access_token"].as_str().expect("a token").to_owned()
        });
    }
    let tokens = calls.join_all().await;
    let distinct: std::collections::HashSet<_> = tokens.iter().collect();
    assert_eq!(distinct.len(), 50);
    let stats = sim.stats().await;
    assert_eq!(stats["calls"]["/cgi-bin/token"], 50);
    assert_eq!(stats["apps"][DEMO_APPID]["/cgi-bin/token"], 50);
    assert_eq!(stats["issued"]["/cgi-bin/token"], 50);
    assert_eq!(sim.handle.sim.calls("/cgi-bin/token"), 50);
    assert!(
        tokens.iter().all(|t| sim.handle.sim.access_token_valid(t)),
        "all within grace"
    );
    sim.advance(GRACE);
    let valid = tokens
        .iter()
        .filter(|t| sim.handle.sim.access_token_valid(t))
        .count();
    assert_eq!(valid, 1, "only the latest survives the grace");
}

#[tokio::test]
async fn stats_count_failed_calls_per_endpoint_and_per_known_app() {
    let sim = spawn_default().await;
    sim.errcode(&format!(
        "/cgi-bin/token?grant_type=client_credential&appid={DEMO_APPID}&secret=wrong"
    ))
    .await;
    sim.errcode("/cgi-bin/token?grant_type=client_credential&appid=stranger&secret=x")
        .await;
    sim.probe("never-issued").await;
    let stats = sim.stats().await;
    assert_eq!(stats["calls"]["/cgi-bin/token"], 2);
    assert_eq!(stats["calls"]["/cgi-bin/getcallbackip"], 1);
    assert_eq!(
        stats["apps"],
        json!({DEMO_APPID: {"/cgi-bin/token": 1}}),
        "unknown apps are not listed"
    );
    assert_eq!(stats["issued"], json!({}));
    assert_eq!(sim.handle.sim.calls("/cgi-bin/token"), 2);
    assert_eq!(sim.handle.sim.calls("/cgi-bin/nope"), 0);
}

#[tokio::test]
async fn sim_valid_tells_why_a_credential_is_refused_and_needs_a_parameter() {
    let sim = spawn_default().await;
    let unknown = sim.valid("access_token=nope").await;
    assert_eq!(
        unknown,
        json!({"valid": false, "reason": "unknown", "errcode": 40014})
    );
    let token = sim.token().await;
    let valid = sim.valid(&format!("access_token={token}")).await;
    assert_eq!(
        (valid["valid"].as_bool(), valid["app"].as_str()),
        (Some(true), Some(DEMO_APPID))
    );
    assert_eq!(
        sim.valid(&format!("ticket={token}")).await["reason"],
        "unknown",
        "a token is not a ticket"
    );
    let (status, body) = sim.get("/sim/valid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("access_token")),
        "{body}"
    );
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_get_json_errors() {
    let sim = spawn_default().await;
    let (status, body) = sim.get("/cgi-bin/nope").await;
    assert_eq!(
        (status, body["errcode"].as_i64()),
        (StatusCode::NOT_FOUND, Some(404))
    );
    let (status, body) = sim.post("/cgi-bin/token", "").await;
    assert_eq!(
        (status, body["errcode"].as_i64()),
        (StatusCode::METHOD_NOT_ALLOWED, Some(405))
    );
    let (status, body) = sim.get("/cgi-bin/stable_token").await;
    assert_eq!(
        (status, body["errcode"].as_i64()),
        (StatusCode::METHOD_NOT_ALLOWED, Some(405))
    );
    let long = "x".repeat(20_000);
    assert_eq!(
        sim.probe(&long).await,
        40014,
        "a huge token is just unknown"
    );
}

#[tokio::test]
async fn simulate_help_documents_every_flag_and_the_demo_app() {
    use clap::CommandFactory;
    let mut cli = wechat_token_server::cli::Cli::command();
    let help = cli
        .find_subcommand_mut("simulate")
        .map(|c| c.render_long_help().to_string())
        .unwrap_or_default();
    for needle in [
        "--bind",
        "--app",
        "--corp",
        "--expires-in",
        "--grace",
        "--daily-quota",
        DEMO_APPID,
        DEMO_SECRET,
        DEMO_CORPID,
        DEMO_CORPSECRET,
    ] {
        assert!(
            help.contains(needle),
            "simulate --help lacks {needle}:\n{help}"
        );
    }
}

#[tokio::test]
async fn the_simulate_command_refuses_a_malformed_app_and_stops_on_shutdown() {
    use tokio_util::sync::CancellationToken;
    use wechat_token_server::cli::SimulateArgs;
    use wechat_token_server::simulator::run_cli;
    let args = |apps: Vec<&str>| SimulateArgs {
        bind: "127.0.0.1:0".parse().expect("an address"),
        apps: apps.into_iter().map(String::from).collect(),
        corps: Vec::new(),
        expires_in: 7200,
        grace: 300,
        daily_quota: 2000,
    };
    let err = run_cli(args(vec!["wx1-without-secret"]), CancellationToken::new()).await;
    let msg = err.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("--app expects ID:SECRET"), "{msg}");
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    let run = run_cli(args(vec!["wx1:s1"]), shutdown);
    let result = tokio::time::timeout(Duration::from_secs(10), run).await;
    assert!(matches!(result, Ok(Ok(()))), "{result:?}");
}
