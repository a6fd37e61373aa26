//! Error codes, quotas and bad input.

use super::*;

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
