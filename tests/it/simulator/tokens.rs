//! Access tokens: /cgi-bin/token, stable_token and WeCom gettoken; grace, expiry, concurrency.

use super::*;

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
    // WeCom's getcallbackip checks WeCom tokens, as WeChat's does its own.
    assert_eq!(sim.probe(&second).await, 0);
    assert_eq!(sim.probe(&first).await, 40001);
    // With WeChat's ip list, which wechatpy's WeCom client reads (on an error it
    // fetches a new token and asks again, spending the quota in a loop).
    let ips = sim
        .wx(&format!("/cgi-bin/getcallbackip?access_token={second}"))
        .await;
    assert!(
        ips["ip_list"].as_array().is_some_and(|l| !l.is_empty()),
        "{ips}"
    );
    sim.advance(LIFE);
    assert_eq!(sim.errcode(&corp_ticket(&second)).await, 42001);
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
