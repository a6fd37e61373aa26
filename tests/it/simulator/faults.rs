//! Injected faults, one test per kind, and bad fault requests.

use super::*;

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
async fn a_delay_fault_issues_the_token_when_the_call_arrives_not_when_it_is_answered() {
    let sim = spawn_default().await;
    let previous = sim.token().await;
    sim.fault(json!({"endpoint": "/cgi-bin/token", "delay_ms": 600_000}))
        .await;
    let url = sim.url(&format!(
        "/cgi-bin/token?grant_type=client_credential&appid={DEMO_APPID}&secret={DEMO_SECRET}"
    ));
    let pending = tokio::spawn(sim.http.get(url).send());
    // Issued while the reply is still held back (for ten minutes).
    let stats = || async { sim.stats().await["issued"]["/cgi-bin/token"] == 2 };
    crate::helpers::wait_until(
        "the delayed call issued its token",
        Duration::from_secs(5),
        stats,
    )
    .await;
    assert!(!pending.is_finished(), "the reply is still held back");
    assert_eq!(
        sim.valid(&format!("access_token={previous}")).await["valid"],
        true
    );
    sim.advance(GRACE);
    assert_eq!(
        sim.valid(&format!("access_token={previous}")).await["reason"],
        "replaced",
        "the held-back token replaced the previous one"
    );
    pending.abort();
}

#[tokio::test]
async fn an_issue_then_drop_fault_issues_the_token_and_closes_the_connection_without_a_response() {
    let sim = spawn_default().await;
    let previous = sim.token().await;
    sim.fault(json!({"endpoint": "/cgi-bin/token", "issue_then_drop": true}))
        .await;
    let path = format!(
        "/cgi-bin/token?grant_type=client_credential&appid={DEMO_APPID}&secret={DEMO_SECRET}"
    );
    let result = sim.http.get(sim.url(&path)).send().await;
    assert!(
        result.is_err(),
        "expected a connection error, got {result:?}"
    );

    let stats = sim.stats().await;
    assert_eq!(stats["calls"]["/cgi-bin/token"], 2);
    assert_eq!(
        stats["issued"]["/cgi-bin/token"], 2,
        "the dropped call issued"
    );
    let token = sim.token().await;
    // The previous token is in its grace: replaced by the dropped call's, still valid.
    let before = sim.valid(&format!("access_token={previous}")).await;
    assert_eq!(
        (before["valid"].as_bool(), before["reason"].as_str()),
        (Some(true), Some("ok"))
    );
    assert_eq!(
        sim.valid(&format!("access_token={token}")).await["valid"],
        true
    );
    sim.advance(GRACE);
    assert_eq!(
        sim.valid(&format!("access_token={previous}")).await["reason"],
        "replaced"
    );
    assert_eq!(
        sim.valid(&format!("access_token={token}")).await["valid"],
        true
    );
    let quota = sim
        .wx_post(
            &format!("/cgi-bin/openapi/quota/get?access_token={token}"),
            json!({"cgi_path": "/cgi-bin/token"}),
        )
        .await;
    assert_eq!(quota["quota"]["used"], 3, "the dropped call used quota");
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
