//! The WeChat simulator over real HTTP: one test per WeChat rule, admin route and fault.
//!
//! Time-dependent rules move the simulator's clock with `advance`; nothing sleeps.
//! This file holds the shared helpers; the tests are in the modules below.

mod admin;
mod component;
mod errors;
mod faults;
mod many_apps;
mod tickets;
mod tokens;

pub use std::time::{Duration, Instant};

pub use reqwest::StatusCode;
pub use serde_json::{Value, json};
pub use wechat_token_server::simulator::{
    DEMO_APPID, DEMO_COMPONENT_AES_KEY, DEMO_COMPONENT_APPID, DEMO_COMPONENT_SECRET,
    DEMO_COMPONENT_TOKEN, DEMO_CORPID, DEMO_CORPSECRET, DEMO_SECRET, SimConfig, SimHandle,
    Simulator,
};

/// A simulator on a free port and a client for it.
pub struct Sim {
    pub handle: SimHandle,
    pub http: reqwest::Client,
}

pub async fn spawn(config: SimConfig) -> Sim {
    let handle = Simulator::spawn(config).await.expect("bind the simulator");
    Sim {
        handle,
        http: reqwest::Client::new(),
    }
}

pub async fn spawn_default() -> Sim {
    spawn(SimConfig::default()).await
}

pub const GRACE: u64 = 300;
pub const LIFE: u64 = 7200;
/// Real seconds a test may take between issuing a credential and checking it. The
/// simulator's clock runs on (plus what tests advance), so "still valid" checks stop
/// this far short of a deadline, and reported lifetimes may be this much lower.
pub const SLACK: u64 = 5;

/// A reported remaining life, `want` at most and at most [`SLACK`] less.
pub fn assert_life(got: u64, want: u64) {
    assert!(
        got <= want && got + SLACK >= want,
        "expires_in {got}, expected about {want}"
    );
}

impl Sim {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.handle.url())
    }

    /// GET, expecting a JSON body; returns status and body.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let resp = self.http.get(self.url(path)).send().await.expect("GET");
        let status = resp.status();
        (status, resp.json().await.expect("a JSON body"))
    }

    /// POST a body, expecting JSON back.
    pub async fn post(&self, path: &str, body: &str) -> (StatusCode, Value) {
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
    pub async fn wx(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        body
    }

    pub async fn wx_post(&self, path: &str, body: Value) -> Value {
        let (status, body) = self.post(path, &body.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        body
    }

    pub async fn errcode(&self, path: &str) -> i64 {
        self.wx(path).await["errcode"].as_i64().unwrap_or(0)
    }

    /// A new `/cgi-bin/token` token of the demo app.
    pub async fn token(&self) -> String {
        let path = format!(
            "/cgi-bin/token?grant_type=client_credential&appid={DEMO_APPID}&secret={DEMO_SECRET}"
        );
        let body = self.wx(&path).await;
        body["access_token"].as_str().expect("a token").to_owned()
    }

    pub async fn stable(&self, force: bool) -> (String, u64) {
        let body = json!({"grant_type": "client_credential", "appid": DEMO_APPID, "secret": DEMO_SECRET, "force_refresh": force});
        let reply = self.wx_post("/cgi-bin/stable_token", body).await;
        let token = reply["access_token"]
            .as_str()
            .expect("a stable token")
            .to_owned();
        (token, reply["expires_in"].as_u64().expect("expires_in"))
    }

    pub async fn ticket(&self, token: &str, kind: &str) -> String {
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

    pub async fn corp_token(&self) -> String {
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
    pub async fn probe(&self, token: &str) -> i64 {
        self.errcode(&format!("/cgi-bin/getcallbackip?access_token={token}"))
            .await
    }

    pub async fn valid(&self, query: &str) -> Value {
        let (status, body) = self.get(&format!("/sim/valid?{query}")).await;
        assert_eq!(status, StatusCode::OK);
        body
    }

    pub async fn fault(&self, fault: Value) {
        let (status, body) = self.post("/sim/faults", &fault.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    pub async fn stats(&self) -> Value {
        self.get("/sim/stats").await.1
    }

    pub fn advance(&self, secs: u64) {
        self.handle.sim.advance(Duration::from_secs(secs));
    }
}
