//! The runtime app registry, `/v1/apps`: every route and failure code, apps kept in
//! the embedded store across restarts (sealed with `store.encryption_key`), and a
//! cluster of three instances on one Redis following every change.

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use wechat_token_server::simulator::SimConfig;

use crate::helpers::{SECRET, TestApp, TestSim, config_with, wait_until};
use crate::redis_server::RedisServer;

/// A 32-byte key as 64 hex digits.
const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const ADMIN_KEY: &str = "admin-client-key-0123456789";
const READER_KEY: &str = "reader-client-key-0123456789";

/// A simulator that knows three Official Accounts.
async fn sim() -> TestSim {
    TestSim::start(SimConfig {
        apps: vec![
            ("wxshop".into(), "shop-secret".into()),
            ("wxbrand".into(), "brand-secret".into()),
            ("wxother".into(), "other-secret".into()),
        ],
        ..SimConfig::default()
    })
    .await
}

/// A config with one config app `shop`, an admin client and a reader client.
fn config(sim: &TestSim, store: &str) -> String {
    config_with(
        store,
        "",
        &format!(
            r#"
[apps.shop]
platform = "mp"
appid = "wxshop"
secret = "shop-secret"
api_base = "http://{sim}"

[clients.ops]
key = "{ADMIN_KEY}"
apps = "*"
tokens = "*"
admin = true

[clients.reader]
key = "{READER_KEY}"
apps = "*"
tokens = "*"
"#,
            sim = sim.addr
        ),
    )
}

/// The definition of the registry app for `appid` on `sim`.
fn definition(sim: &TestSim, appid: &str, secret: &str, tickets: &[&str]) -> Value {
    json!({
        "platform": "mp",
        "appid": appid,
        "secret": secret,
        "tickets": tickets,
        "api_base": format!("http://{}", sim.addr),
    })
}

/// A request to `/v1/apps...` with `key` as Bearer.
async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut request = app.client.request(method, format!("{}{path}", app.base));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn put(app: &TestApp, name: &str, body: &Value) -> (StatusCode, Value) {
    call(
        app,
        reqwest::Method::PUT,
        &format!("/v1/apps/{name}"),
        Some(SECRET),
        Some(body),
    )
    .await
}

async fn get(app: &TestApp, path: &str) -> (StatusCode, Value) {
    call(app, reqwest::Method::GET, path, Some(SECRET), None).await
}

async fn delete(app: &TestApp, name: &str) -> StatusCode {
    call(
        app,
        reqwest::Method::DELETE,
        &format!("/v1/apps/{name}"),
        Some(SECRET),
        None,
    )
    .await
    .0
}

/// The token `app`/`name` via `/v1`, if served.
async fn token(server: &TestApp, app: &str, name: &str) -> Option<String> {
    let (status, body) = get(server, &format!("/v1/tokens/{app}/{name}")).await;
    (status == StatusCode::OK).then(|| body["value"].as_str().unwrap().to_owned())
}

/// Waits until `app`/`name` is served by `server`, and returns it.
async fn served(server: &TestApp, app: &str, name: &str, within: Duration) -> String {
    wait_until(&format!("{app}/{name} is served"), within, || async {
        token(server, app, name).await.is_some()
    })
    .await;
    token(server, app, name).await.unwrap()
}

#[tokio::test]
async fn a_registered_app_is_served_kept_across_a_restart_and_removed_with_its_tokens() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("path = \"{}\"", dir.path().display());
    let text = config(&sim, &store);
    let server = TestApp::spawn_with(sim.clone(), &text).await;

    let (status, body) = put(
        &server,
        "brand",
        &definition(&sim, "wxbrand", "brand-secret", &["jsapi"]),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["secret"], "***");
    assert_eq!(body["appid"], "wxbrand");
    assert_eq!(body["source"], "registry");
    assert_eq!(body["tokens"], json!(["access_token", "jsapi_ticket"]));

    let access = served(&server, "brand", "access_token", Duration::from_secs(5)).await;
    let ticket = served(&server, "brand", "jsapi_ticket", Duration::from_secs(5)).await;
    assert!(sim.token_valid(&access).await);
    assert!(sim.ticket_valid(&ticket).await);
    // The seed's route and JS-SDK signatures know registry apps too.
    let (status, body) = server
        .get("/wechat/token?app=brand&type=access_token")
        .await;
    assert_eq!(
        (status, body["access_token"].as_str()),
        (StatusCode::OK, Some(access.as_str()))
    );
    let (status, body) = get(
        &server,
        "/v1/jssdk/brand/signature?url=https%3A%2F%2Fshop.example%2Fa",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["appId"], "wxbrand");

    // Shown without secrets, config and registry apps side by side.
    let (status, body) = get(&server, "/v1/apps/brand").await;
    assert_eq!((status, &body["secret"]), (StatusCode::OK, &json!("***")));
    let (status, body) = get(&server, "/v1/apps/shop").await;
    assert_eq!(
        (status, &body["source"]),
        (StatusCode::OK, &json!("config"))
    );
    let (status, list) = get(&server, "/v1/apps").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["brand", "shop"]);
    assert_eq!(list["next"], Value::Null);
    assert!(
        !list.to_string().contains("brand-secret") && !list.to_string().contains("shop-secret")
    );

    // The same definition again changes nothing and calls nothing.
    let calls = sim.calls("/cgi-bin/token").await;
    let (status, _) = put(
        &server,
        "brand",
        &definition(&sim, "wxbrand", "brand-secret", &["jsapi"]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        token(&server, "brand", "access_token").await.as_deref(),
        Some(access.as_str())
    );
    assert_eq!(sim.calls("/cgi-bin/token").await, calls);

    // Config apps belong to the config file.
    let (status, body) = put(
        &server,
        "shop",
        &definition(&sim, "wxother", "other-secret", &[]),
    )
    .await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::CONFLICT, &json!("conflict"))
    );
    assert_eq!(delete(&server, "shop").await, StatusCode::CONFLICT);

    // A restart serves the registered app at once, from the store, with no call.
    server.stop().await;
    let calls = sim.calls("/cgi-bin/token").await;
    let server = TestApp::start(sim.clone(), &text).await;
    assert_eq!(
        token(&server, "brand", "access_token").await.as_deref(),
        Some(access.as_str())
    );
    assert_eq!(
        token(&server, "brand", "jsapi_ticket").await.as_deref(),
        Some(ticket.as_str())
    );
    assert_eq!(sim.calls("/cgi-bin/token").await, calls);

    // Removed: no longer served, its tokens gone from the store, and gone after a
    // restart too.
    assert_eq!(delete(&server, "brand").await, StatusCode::NO_CONTENT);
    assert_eq!(
        get(&server, "/v1/tokens/brand/access_token").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&server, "/v1/apps/brand").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(delete(&server, "brand").await, StatusCode::NOT_FOUND);
    assert!(!dir.path().join("tokens/brand/access_token.json").exists());
    assert!(!dir.path().join("apps/brand.json").exists());
    server.stop().await;
    let server = TestApp::spawn_with(sim.clone(), &text).await;
    assert_eq!(
        get(&server, "/v1/apps/brand").await.0,
        StatusCode::NOT_FOUND
    );
    assert!(token(&server, "shop", "access_token").await.is_some());
}

#[tokio::test]
async fn a_changed_definition_replaces_the_apps_tokens() {
    let sim = sim().await;
    let store = "backend = \"memory\"".to_owned();
    changed_definition(&sim, &store).await;
}

#[tokio::test]
async fn on_redis_a_changed_definition_never_serves_the_old_accounts_token() {
    let redis = RedisServer::start().await;
    let sim = sim().await;
    let store = format!(
        "backend = \"redis\"\nredis_url = \"{}\"\nencryption_key = \"{KEY}\"",
        redis.url()
    );
    changed_definition(&sim, &store).await;
    // Restarted: still the new account's token, from Redis.
    let server = TestApp::start(sim.clone(), &config(&sim, &store)).await;
    let new = served(&server, "brand", "access_token", Duration::from_secs(5)).await;
    assert_eq!(
        redis
            .cli(&["HGET", "wts:meta:brand:access_token", "value"])
            .await,
        new
    );
}

/// Registers `brand` for one account, then for another under the same name: the
/// second's token is fetched, the first's never served again.
async fn changed_definition(sim: &TestSim, store: &str) {
    let sim = sim.clone();
    let server = TestApp::spawn_with(sim.clone(), &config(&sim, store)).await;
    let (status, _) = put(
        &server,
        "brand",
        &definition(&sim, "wxbrand", "brand-secret", &["jsapi"]),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let old = served(&server, "brand", "access_token", Duration::from_secs(5)).await;
    served(&server, "brand", "jsapi_ticket", Duration::from_secs(5)).await;

    // Another account under the same name, without a ticket.
    let (status, body) = put(
        &server,
        "brand",
        &definition(&sim, "wxother", "other-secret", &[]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tokens"], json!(["access_token"]));
    let new = served(&server, "brand", "access_token", Duration::from_secs(5)).await;
    assert_ne!(
        new, old,
        "a token of the old account is never served for the new one"
    );
    assert!(sim.token_valid(&new).await);
    assert!(
        sim.issued("/cgi-bin/token").await >= 3,
        "shop, brand, and brand again"
    );
    assert_eq!(
        get(&server, "/v1/tokens/brand/jsapi_ticket").await.0,
        StatusCode::NOT_FOUND
    );
    // The config app was served all along.
    assert!(token(&server, "shop", "access_token").await.is_some());
    server.stop().await;
}

#[tokio::test]
async fn every_route_refuses_bad_requests_with_a_clear_code() {
    let sim = sim().await;
    let server = TestApp::spawn_with(sim.clone(), &config(&sim, "backend = \"memory\"")).await;
    let good = definition(&sim, "wxbrand", "brand-secret", &[]);

    // Who may manage apps: the request secret and admin clients; nobody else.
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let (status, body) =
            call(&server, method.clone(), "/v1/apps/brand", None, Some(&good)).await;
        assert_eq!(
            (status, &body["error"]),
            (StatusCode::UNAUTHORIZED, &json!("unauthorized")),
            "{method}"
        );
        let (status, body) = call(
            &server,
            method.clone(),
            "/v1/apps/brand",
            Some(READER_KEY),
            Some(&good),
        )
        .await;
        assert_eq!(
            (status, &body["error"]),
            (StatusCode::FORBIDDEN, &json!("forbidden")),
            "{method}"
        );
    }
    assert_eq!(
        call(
            &server,
            reqwest::Method::GET,
            "/v1/apps",
            Some(READER_KEY),
            None
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    let (status, _) = call(
        &server,
        reqwest::Method::PUT,
        "/v1/apps/brand",
        Some(ADMIN_KEY),
        Some(&good),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    // Bad definitions name the field.
    let cases = [
        (json!({"platform": "mp", "appid": "wxbrand"}), "secret"),
        (
            json!({"platform": "mp", "appid": "wxbrand", "secret": "s", "colour": "red"}),
            "colour",
        ),
        (
            json!({"platform": "pc", "appid": "wxbrand", "secret": "s"}),
            "platform",
        ),
        (
            json!({"platform": "mp", "appid": null, "secret": "s"}),
            "appid",
        ),
        (
            json!({"platform": "mp", "appid": "a", "secret": "s", "tickets": ["jsap"]}),
            "tickets",
        ),
        (json!(["mp"]), "JSON object"),
    ];
    for (body, field) in cases {
        let (status, reply) = put(&server, "other", &body).await;
        assert_eq!(
            (status, &reply["error"]),
            (StatusCode::BAD_REQUEST, &json!("bad_request")),
            "{body}"
        );
        assert!(
            reply["message"].as_str().unwrap().contains(field),
            "{body}: {reply}"
        );
    }
    let response = server
        .client
        .put(format!("{}/v1/apps/other", server.base))
        .bearer_auth(SECRET)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let (status, reply) = put(&server, ".hidden", &good).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert_eq!(
        get(&server, "/v1/apps/other").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(delete(&server, "other").await, StatusCode::NOT_FOUND);
    for query in ["limit=0", "limit=1001", "limit=x", "page=2"] {
        let (status, reply) = get(&server, &format!("/v1/apps?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {reply}");
    }
    // Nothing bad was stored.
    let (_, list) = get(&server, "/v1/apps").await;
    assert_eq!(list["apps"].as_array().unwrap().len(), 2, "{list}");
}

#[tokio::test]
async fn the_list_pages_through_every_app_by_name() {
    let sim = sim().await;
    let server = TestApp::spawn_with(sim.clone(), &config(&sim, "backend = \"memory\"")).await;
    for name in ["e", "a", "d", "b", "c"] {
        // No token call needed to page: these apps point at a closed port.
        let body = json!({"platform": "mp", "appid": format!("wx{name}"), "secret": "s", "api_base": "http://127.0.0.1:9"});
        assert_eq!(put(&server, name, &body).await.0, StatusCode::CREATED);
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let query = match &after {
            Some(after) => format!("/v1/apps?limit=2&after={after}"),
            None => "/v1/apps?limit=2".to_owned(),
        };
        let (status, page) = get(&server, &query).await;
        assert_eq!(status, StatusCode::OK);
        let apps = page["apps"].as_array().unwrap();
        assert!(apps.len() <= 2);
        seen.extend(apps.iter().map(|a| a["name"].as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e", "shop"]);
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_and_a_wrong_key_serves_nothing() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().display().to_string();
    let with_key = |key: &str| {
        config(
            &sim,
            &format!("path = \"{path}\"\nencryption_key = \"{key}\""),
        )
    };
    let server = TestApp::spawn_with(sim.clone(), &with_key(KEY)).await;
    let (status, _) = put(
        &server,
        "brand",
        &definition(&sim, "wxbrand", "brand-secret", &[]),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let access = served(&server, "brand", "access_token", Duration::from_secs(5)).await;
    server.stop().await;
    let record = std::fs::read_to_string(dir.path().join("apps/brand.json")).unwrap();
    assert!(
        !record.contains("brand-secret") && !record.contains("wxbrand"),
        "{record}"
    );

    // Another key: the app cannot be read, so it is not served (and not lost).
    let other = "ff".repeat(32);
    let server = TestApp::spawn_with(sim.clone(), &with_key(&other)).await;
    assert_eq!(
        get(&server, "/v1/apps/brand").await.0,
        StatusCode::NOT_FOUND
    );
    server.stop().await;
    // The right key again: served at once from the store.
    let server = TestApp::start(sim.clone(), &with_key(KEY)).await;
    assert_eq!(
        token(&server, "brand", "access_token").await.as_deref(),
        Some(access.as_str())
    );
}

#[tokio::test]
async fn redis_refuses_registry_secrets_without_an_encryption_key() {
    let redis = RedisServer::start().await;
    let sim = sim().await;
    let store = format!("backend = \"redis\"\nredis_url = \"{}\"", redis.url());
    let server = TestApp::spawn_with(sim.clone(), &config(&sim, &store)).await;
    let (status, body) = put(
        &server,
        "brand",
        &definition(&sim, "wxbrand", "brand-secret", &[]),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("store.encryption_key"),
        "{body}"
    );
    assert_eq!(redis.cli(&["HLEN", "wts:apps"]).await, "0");
}

#[tokio::test]
async fn a_cluster_of_three_follows_every_registry_change() {
    let redis = RedisServer::start().await;
    let sim = sim().await;
    let store = format!(
        "backend = \"redis\"\nredis_url = \"{}\"\nencryption_key = \"{KEY}\"",
        redis.url()
    );
    let text = config(&sim, &store);
    let mut servers = join_all((0..3).map(|_| TestApp::spawn_with(sim.clone(), &text))).await;

    // Registered on one, served by all within 2 s, one token cluster-wide.
    let (status, _) = put(
        &servers[0],
        "brand",
        &definition(&sim, "wxbrand", "brand-secret", &["jsapi"]),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let first = served(&servers[0], "brand", "access_token", Duration::from_secs(5)).await;
    for server in &servers[1..] {
        assert_eq!(
            served(server, "brand", "access_token", Duration::from_secs(2)).await,
            first
        );
        served(server, "brand", "jsapi_ticket", Duration::from_secs(2)).await;
    }
    assert!(sim.token_valid(&first).await);
    assert_eq!(
        sim.issued("/cgi-bin/token").await,
        2,
        "one token per app cluster-wide (shop, brand)"
    );
    // Sealed in Redis.
    let record = redis.cli(&["HGET", "wts:apps", "brand"]).await;
    assert!(
        !record.is_empty() && !record.contains("brand-secret"),
        "{record}"
    );
    let (status, body) = get(&servers[2], "/v1/apps/brand").await;
    assert_eq!((status, &body["secret"]), (StatusCode::OK, &json!("***")));

    // A restarted instance serves it at once from Redis.
    let restarted = servers.remove(2);
    restarted.stop().await;
    let restarted = TestApp::start(sim.clone(), &text).await;
    assert_eq!(
        token(&restarted, "brand", "access_token").await.as_deref(),
        Some(first.as_str())
    );
    servers.push(restarted);

    // Removed on another: gone everywhere within 2 s, and from Redis.
    assert_eq!(delete(&servers[1], "brand").await, StatusCode::NO_CONTENT);
    for server in &servers {
        wait_until(
            "the removed app is no longer served",
            Duration::from_secs(2),
            || async {
                get(server, "/v1/tokens/brand/access_token").await.0 == StatusCode::NOT_FOUND
            },
        )
        .await;
    }
    // Its tokens leave Redis once every instance has stopped refreshing them.
    wait_until(
        "the removed app's tokens leave Redis",
        Duration::from_secs(6),
        || async {
            let keys = [
                "EXISTS",
                "wts:meta:brand:access_token",
                "brand:access_token",
                "wts:meta:brand:jsapi_ticket",
            ];
            redis.cli(&keys).await == "0"
        },
    )
    .await;
    assert_eq!(redis.cli(&["HEXISTS", "wts:apps", "brand"]).await, "0");
    // The config app was served throughout.
    for server in &servers {
        assert!(token(server, "shop", "access_token").await.is_some());
    }
}

#[tokio::test]
async fn registering_and_removing_apps_never_interrupts_serving_the_others() {
    let sim = sim().await;
    let server = TestApp::spawn_with(sim.clone(), &config(&sim, "backend = \"memory\"")).await;
    let shop = token(&server, "shop", "access_token").await.unwrap();
    let churn = {
        let (client, base) = (server.client.clone(), server.base.clone());
        tokio::spawn(async move {
            for round in 0..10 {
                for i in 0..5 {
                    let body = json!({"platform": "mp", "appid": format!("wx{round}{i}"), "secret": "s", "api_base": "http://127.0.0.1:9"});
                    let url = format!("{base}/v1/apps/churn{i}");
                    let put = client
                        .put(&url)
                        .bearer_auth(SECRET)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    assert!(put.status().is_success(), "{}", put.status());
                    let deleted = client
                        .delete(&url)
                        .bearer_auth(SECRET)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
                }
            }
        })
    };
    let mut served = 0;
    while !churn.is_finished() {
        let (status, body) = server.get("/wechat/token?app=shop&type=access_token").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["access_token"].as_str(), Some(shop.as_str()));
        served += 1;
    }
    churn.await.unwrap();
    assert!(served > 0);
    let (_, list) = get(&server, "/v1/apps").await;
    assert_eq!(list["apps"].as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test]
async fn a_redis_restarted_empty_gets_the_registry_written_back() {
    let redis = RedisServer::start().await;
    let sim = sim().await;
    let store = format!(
        "backend = \"redis\"\nredis_url = \"{}\"\nencryption_key = \"{KEY}\"",
        redis.url()
    );
    let server = TestApp::spawn_with(sim.clone(), &config(&sim, &store)).await;
    let (status, _) = put(
        &server,
        "brand",
        &definition(&sim, "wxbrand", "brand-secret", &[]),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    served(&server, "brand", "access_token", Duration::from_secs(5)).await;
    redis.cli(&["FLUSHALL"]).await;
    wait_until(
        "the registry is written back",
        Duration::from_secs(10),
        || async { redis.cli(&["HEXISTS", "wts:apps", "brand"]).await == "1" },
    )
    .await;
    // Not taken for a removal: still served, still listed.
    assert!(token(&server, "brand", "access_token").await.is_some());
    assert_eq!(get(&server, "/v1/apps/brand").await.0, StatusCode::OK);
}
