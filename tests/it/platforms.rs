//! `[apps.NAME]` presets against the simulator: several mp and WeCom apps at once, every
//! ticket kind, api_base fallback, and the seed routes for many apps.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::json;

use crate::apps::{self, closed_port, config, four_apps, seed, value};
use crate::helpers::{SECRET, TestApp};

/// Every token of the four apps, with whether it is an access_token.
const TOKENS: [(&str, &str, bool); 9] = [
    ("shop", "access_token", true),
    ("shop", "jsapi_ticket", false),
    ("shop", "wx_card_ticket", false),
    ("blog", "access_token", true),
    ("blog", "jsapi_ticket", false),
    ("office", "access_token", true),
    ("office", "jsapi_ticket", false),
    ("office", "agent_config_ticket", false),
    ("hr", "access_token", true),
];

#[tokio::test]
async fn several_mp_and_wecom_apps_are_served_at_once_and_every_token_is_valid_upstream() {
    let sim = apps::sim().await;
    let text = config(&four_apps(sim.addr));
    let app = TestApp::spawn_with(sim, &text).await;

    let mut seen = HashSet::new();
    for (app_name, name, is_access_token) in TOKENS {
        let token = value(&app, app_name, name).await;
        let valid = if is_access_token {
            app.sim.token_valid(&token).await
        } else {
            app.sim.ticket_valid(&token).await
        };
        assert!(valid, "{app_name}/{name} is not accepted by WeChat");
        assert!(
            seen.insert(token),
            "{app_name}/{name} repeats another token"
        );
    }
    // Each platform's own endpoints were used, once per token at start-up.
    assert_eq!(app.sim.calls("/cgi-bin/token").await, 1);
    assert_eq!(app.sim.calls("/cgi-bin/stable_token").await, 1);
    assert_eq!(app.sim.calls("/cgi-bin/gettoken").await, 2);
    assert_eq!(app.sim.calls("/cgi-bin/ticket/getticket").await, 3);
    assert_eq!(app.sim.calls("/cgi-bin/get_jsapi_ticket").await, 1);
    assert_eq!(app.sim.calls("/cgi-bin/ticket/get").await, 1);
    // Tokens that the config did not ask for do not exist.
    let (status, _) = apps::get(&app, "/v1/tokens/hr/jsapi_ticket", SECRET).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = apps::get(&app, "/v1/tokens/blog/wx_card_ticket", SECRET).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn wx_card_and_agent_config_tickets_are_force_refreshed_to_new_valid_tickets() {
    let sim = apps::sim().await;
    let text = config(&four_apps(sim.addr));
    let app = TestApp::spawn_with(sim, &text).await;
    for (app_name, name) in [
        ("shop", "wx_card_ticket"),
        ("office", "agent_config_ticket"),
    ] {
        let old = value(&app, app_name, name).await;
        let (status, body) = apps::post(
            &app,
            &format!("/v1/tokens/{app_name}/{name}/refresh"),
            SECRET,
            Some(json!({"stale": old})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let new = body["value"].as_str().unwrap();
        assert_ne!(new, old, "{app_name}/{name}");
        assert!(app.sim.ticket_valid(new).await, "{app_name}/{name}");
        assert_eq!(value(&app, app_name, name).await, new);
    }
}

#[tokio::test]
async fn the_next_api_base_is_used_when_the_first_host_is_down() {
    let sim = apps::sim().await;
    let down = closed_port().await;
    let text = config(&format!(
        r#"
[apps.shop]
platform = "mp"
appid = "wx_shop"
secret = "shop_secret"
tickets = ["jsapi"]
api_base = ["http://127.0.0.1:{down}", "http://{}"]

[apps.office]
platform = "wecom"
corpid = "ww_office"
corpsecret = "office_secret"
tickets = ["jsapi"]
api_base = ["http://127.0.0.1:{down}", "http://{}"]
"#,
        sim.addr, sim.addr
    ));
    let app = TestApp::spawn_with(sim, &text).await;
    assert!(
        app.sim
            .token_valid(&value(&app, "shop", "access_token").await)
            .await
    );
    assert!(
        app.sim
            .ticket_valid(&value(&app, "shop", "jsapi_ticket").await)
            .await
    );
    assert!(
        app.sim
            .token_valid(&value(&app, "office", "access_token").await)
            .await
    );
    assert!(
        app.sim
            .ticket_valid(&value(&app, "office", "jsapi_ticket").await)
            .await
    );
}

#[tokio::test]
async fn the_seed_routes_serve_every_app_and_type_ticket_means_the_jsapi_ticket() {
    let sim = apps::sim().await;
    let text = config(&four_apps(sim.addr));
    let app = TestApp::spawn_with(sim, &text).await;

    for (app_name, name, _) in TOKENS {
        let (status, body) = seed(
            &app,
            &format!("/wechat/token?app={app_name}&type={name}"),
            SECRET,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{app_name}/{name}: {body}");
        assert_eq!(body[name], value(&app, app_name, name).await.as_str());
    }
    for app_name in ["shop", "blog", "office"] {
        let (status, body) = seed(
            &app,
            &format!("/wechat/token?app={app_name}&type=ticket"),
            SECRET,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
        assert_eq!(
            body["ticket"],
            value(&app, app_name, "jsapi_ticket").await.as_str()
        );
    }
    // The alias works for force refresh too.
    let old = value(&app, "shop", "jsapi_ticket").await;
    let (status, body) = seed(
        &app,
        &format!("/wechat/token/forcerefresh?app=shop&type=ticket&stale={old}"),
        SECRET,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new = body["ticket"].as_str().unwrap();
    assert_ne!(new, old);
    assert!(app.sim.ticket_valid(new).await);
    // hr has no ticket; several apps and no app= is a 404 that says what to do.
    let (status, _) = seed(&app, "/wechat/token?app=hr&type=ticket", SECRET).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = seed(&app, "/wechat/token?type=access_token", SECRET).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["message"].as_str().unwrap().contains("app="), "{body}");
}
