//! The Python original's routes: shapes, status codes, auth, hostile input.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{SECRET, TestApp, TestSim};

#[tokio::test]
async fn serves_the_access_token_and_the_ticket_in_the_seed_shape() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/wechat/token?type=access_token").await;
    assert_eq!(status, StatusCode::OK);
    let object = body.as_object().unwrap();
    assert_eq!(object.len(), 2, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!((7100..=7200).contains(&expires_in), "{expires_in}");
    assert!(app.sim.token_valid(token).await);

    let (status, body) = app.get("/wechat/token?type=ticket").await;
    assert_eq!(status, StatusCode::OK);
    assert!(app.sim.ticket_valid(body["ticket"].as_str().unwrap()).await);
    assert_eq!(body.as_object().unwrap().len(), 2);
}

#[tokio::test]
async fn serving_costs_no_upstream_call() {
    let app = TestApp::spawn().await;
    let before = app.sim.calls("/cgi-bin/token").await;
    for _ in 0..20 {
        app.token("access_token").await;
    }
    assert_eq!(app.sim.calls("/cgi-bin/token").await, before);
    assert_eq!(before, 1, "one fetch at start-up");
}

#[tokio::test]
async fn a_missing_or_wrong_secret_is_refused_with_401() {
    let app = TestApp::spawn().await;
    for url in [
        format!("{}/wechat/token?type=access_token", app.base),
        format!("{}/wechat/token?type=access_token&secret=wrong", app.base),
        format!("{}/wechat/token?type=access_token&secret=", app.base),
        format!(
            "{}/wechat/token/forcerefresh?type=access_token&secret={SECRET}x",
            app.base
        ),
    ] {
        let response = app.client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{url}");
        assert_eq!(
            response.json::<serde_json::Value>().await.unwrap(),
            json!({"error": "invalid request"})
        );
    }
}

#[tokio::test]
async fn the_secret_may_be_a_bearer_token() {
    let app = TestApp::spawn().await;
    let url = format!("{}/wechat/token?type=access_token", app.base);
    let ok = app
        .client
        .get(&url)
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let bad = app
        .client
        .get(&url)
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_unknown_token_name_is_404_not_found() {
    let app = TestApp::spawn().await;
    for query in [
        "type=refresh_token",
        "type=",
        "type=access_token&app=nope",
        "",
    ] {
        let (status, body) = app.get(&format!("/wechat/token?{query}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{query}");
        assert_eq!(body["error"], "not found", "{query}");
    }
    let (status, _) = app.get("/no/such/path").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_token_not_fetched_yet_is_503_not_found() {
    let sim = TestSim::start(Default::default()).await;
    sim.fault(
        "/cgi-bin/token",
        1000,
        json!({"errcode": -1, "errmsg": "system error"}),
    )
    .await;
    let app = TestApp::start(
        sim,
        &crate::helpers::seed_config_for_memory_with_slow_retries(),
    )
    .await;
    let (status, body) = app.get("/wechat/token?type=access_token").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "not found");
    assert!(body["message"].as_str().unwrap().contains("access_token"));
    assert_eq!(app.readiness().await.0, StatusCode::SERVICE_UNAVAILABLE);
}

/// `GET` is answered by the server before the router (its shortcut), `HEAD` by the
/// router's own route for the path: both must answer alike.
#[tokio::test]
async fn head_is_answered_like_get() {
    let app = TestApp::spawn().await;
    let url = |secret: &str| {
        format!(
            "{}/wechat/token?type=access_token&secret={secret}",
            app.base
        )
    };
    for (secret, expected) in [
        (SECRET, StatusCode::OK),
        ("wrong", StatusCode::UNAUTHORIZED),
    ] {
        let get = app.client.get(url(secret)).send().await.unwrap();
        let head = app.client.head(url(secret)).send().await.unwrap();
        assert_eq!(get.status(), expected);
        assert_eq!(head.status(), expected);
        for name in ["content-type", "content-length"] {
            assert_eq!(head.headers().get(name), get.headers().get(name), "{name}");
        }
        assert!(head.bytes().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn hostile_input_gets_a_4xx_and_the_server_keeps_serving() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/wechat/token?type=access_token&type=ticket").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let huge = "x".repeat(100_000);
    let response = app
        .client
        .get(format!("{}/wechat/token?type={huge}", app.base))
        .send()
        .await;
    if let Ok(response) = response {
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    let response = app
        .client
        .get(format!("{}/wechat/token?type=%ZZ%00&secret=%FF", app.base))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error());
    let response = app
        .client
        .post(format!(
            "{}/wechat/token?type=access_token&secret={SECRET}",
            app.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let response = app
        .client
        .delete(format!("{}/wechat/token/forcerefresh", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    // Still serving.
    app.token("access_token").await;
}

#[tokio::test]
async fn the_index_page_lists_tokens_without_their_values() {
    let app = TestApp::spawn().await;
    let token = app.token("access_token").await;
    let (_, page) = app.page("/").await;
    assert!(
        page.contains("default/access_token") && page.contains("default/ticket"),
        "{page}"
    );
    assert!(page.contains("Expires in"), "{page}");
    assert!(
        !page.contains(&token[..16]),
        "token leaked on the index page"
    );
    assert_eq!(app.page("/healthz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn graceful_shutdown_lets_an_in_flight_force_refresh_finish() {
    let app = TestApp::spawn().await;
    let current = app.token("access_token").await;
    app.sim
        .fault("/cgi-bin/token", 1, json!({"delay_ms": 500}))
        .await;
    let before = app.sim.calls("/cgi-bin/token").await;
    let request = {
        let url = format!(
            "{}/wechat/token/forcerefresh?type=access_token&secret={SECRET}&stale={current}",
            app.base
        );
        let client = app.client.clone();
        tokio::spawn(async move { client.get(url).send().await.unwrap() })
    };
    // Shut down once WeChat has received the (slow) call.
    crate::helpers::wait_until(
        "the refresh reached WeChat",
        std::time::Duration::from_secs(5),
        || {
            let sim = &app.sim;
            async move { sim.calls("/cgi-bin/token").await > before }
        },
    )
    .await;
    app.stop().await;
    let response = request.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_ne!(body["access_token"], current.as_str());
}
