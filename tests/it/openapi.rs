//! `openapi/v1.json` against the running server: every documented operation exists, and
//! a real response of every documented status carries the documented properties.
//!
//! The checker below covers what the document uses ($ref, allOf, object, array, string,
//! integer, nullable, enum, required, pattern-free types); a construct it does not know
//! fails the test, so the document cannot silently outgrow the check.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::apps::{self, closed_port, config, four_apps, value};
use crate::helpers::{SECRET, TestApp};
use wechat_token_server::simulator::{
    DEMO_COMPONENT_AES_KEY, DEMO_COMPONENT_APPID, DEMO_COMPONENT_SECRET, DEMO_COMPONENT_TOKEN,
};

const DOC: &str = include_str!("../../openapi/v1.json");
const OTHER: &str = "other-app-key-0123456789";
const FAR: &str = "far-away-key-0123456789";

/// Follows `#/components/schemas/X`.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unsupported $ref {r}"));
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// Checks `value` against `schema`; returns the problems found.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if value.is_null() {
        if schema["nullable"] != true {
            problems.push(format!("{at}: null but not nullable"));
        }
        return;
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for part in all {
            check(doc, part, value, at, problems);
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        problems.push(format!("{at}: {value} not in {allowed:?}"));
    }
    let Some(kind) = schema.get("type").and_then(Value::as_str) else {
        assert!(
            schema.get("allOf").is_some(),
            "{at}: schema without type: {schema}"
        );
        return;
    };
    let ok = match kind {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "boolean" => value.is_boolean(),
        other => panic!("{at}: unsupported type {other}"),
    };
    if !ok {
        problems.push(format!("{at}: expected {kind}, got {value}"));
        return;
    }
    if kind == "object" {
        for required in schema["required"].as_array().into_iter().flatten() {
            let key = required.as_str().unwrap();
            if value.get(key).is_none() {
                problems.push(format!("{at}: missing required {key}"));
            }
        }
        for (key, sub) in schema["properties"].as_object().into_iter().flatten() {
            if let Some(v) = value.get(key) {
                check(doc, sub, v, &format!("{at}.{key}"), problems);
            }
        }
    }
    if kind == "array" {
        for (i, item) in value.as_array().unwrap().iter().enumerate() {
            check(doc, &schema["items"], item, &format!("{at}[{i}]"), problems);
        }
    }
}

/// One request of the scenario: which documented case it exercises and how.
struct Case {
    method: Method,
    /// The documented path.
    path: &'static str,
    status: u16,
    /// The concrete path and query to call.
    url: String,
    key: Option<&'static str>,
    body: Option<Value>,
    /// Written over the server's config file before the request (reload cases).
    file: Option<String>,
}

fn case(
    method: Method,
    path: &'static str,
    status: u16,
    url: impl Into<String>,
    key: Option<&'static str>,
    body: Option<Value>,
) -> Case {
    Case {
        method,
        path,
        status,
        url: url.into(),
        key,
        body,
        file: None,
    }
}

#[tokio::test]
async fn every_documented_operation_and_response_matches_the_running_server() {
    let doc: Value = serde_json::from_str(DOC).expect("openapi/v1.json is JSON");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));

    // shop and office as usual; `down` has a dead API host, so its tokens are never
    // fetched (503) and refreshing them fails (502).
    let sim = apps::sim().await;
    let down = closed_port().await;
    let text = config(&format!(
        r#"
{}
[apps.down]
platform = "mp"
appid = "wx_down"
secret = "down_secret"
tickets = ["jsapi"]
api_base = "http://127.0.0.1:{down}"

[apps.platform]
platform = "component"
component_appid = "{component_appid}"
component_appsecret = "{component_secret}"
token = "{component_token}"
encoding_aes_key = "{component_key}"
api_base = "http://{sim_addr}"

[apps.deadplat]
platform = "component"
component_appid = "wx_dead_component"
component_appsecret = "dead_secret"
token = "dead_token"
encoding_aes_key = "{component_key}"
api_base = "http://127.0.0.1:{down}"

[clients.other]
key = "{OTHER}"
apps = ["hr"]
tokens = "*"

[clients.far]
key = "{FAR}"
apps = "*"
tokens = "*"
networks = ["10.0.0.0/8"]
"#,
        four_apps(sim.addr),
        component_appid = DEMO_COMPONENT_APPID,
        component_secret = DEMO_COMPONENT_SECRET,
        component_token = DEMO_COMPONENT_TOKEN,
        component_key = DEMO_COMPONENT_AES_KEY,
        sim_addr = sim.addr,
    ));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    let app = TestApp::start_from_file(sim, &text, &file).await;
    for (a, n) in [
        ("shop", "access_token"),
        ("shop", "jsapi_ticket"),
        ("office", "access_token"),
    ] {
        apps::wait_served(&app, a, n).await;
    }
    let stale = value(&app, "shop", "access_token").await;
    open_platform_ready(&app).await;

    const TOKEN: &str = "/v1/tokens/{app}/{name}";
    const REFRESH: &str = "/v1/tokens/{app}/{name}/refresh";
    const STATUS: &str = "/v1/status";
    const JSSDK: &str = "/v1/jssdk/{app}/signature";
    const OPENAPI: &str = "/v1/openapi.json";
    let (get, post) = (Method::GET, Method::POST);
    let sign = "?url=https%3A%2F%2Fshop.example.com%2F";
    let cases = vec![
        case(
            get.clone(),
            TOKEN,
            200,
            "/v1/tokens/shop/access_token",
            Some(SECRET),
            None,
        ),
        case(
            get.clone(),
            TOKEN,
            401,
            "/v1/tokens/shop/access_token",
            None,
            None,
        ),
        case(
            get.clone(),
            TOKEN,
            403,
            "/v1/tokens/shop/access_token",
            Some(OTHER),
            None,
        ),
        case(
            get.clone(),
            TOKEN,
            404,
            "/v1/tokens/shop/nope",
            Some(SECRET),
            None,
        ),
        case(
            get.clone(),
            TOKEN,
            503,
            "/v1/tokens/down/access_token",
            Some(SECRET),
            None,
        ),
        case(
            post.clone(),
            REFRESH,
            200,
            "/v1/tokens/shop/access_token/refresh",
            Some(SECRET),
            Some(json!({"stale": stale})),
        ),
        case(
            post.clone(),
            REFRESH,
            400,
            "/v1/tokens/shop/access_token/refresh",
            Some(SECRET),
            Some(json!({"stale": 5})),
        ),
        case(
            post.clone(),
            REFRESH,
            401,
            "/v1/tokens/shop/access_token/refresh",
            Some("nobody"),
            None,
        ),
        case(
            post.clone(),
            REFRESH,
            403,
            "/v1/tokens/shop/access_token/refresh",
            Some(OTHER),
            None,
        ),
        case(
            post.clone(),
            REFRESH,
            404,
            "/v1/tokens/nope/access_token/refresh",
            Some(SECRET),
            None,
        ),
        case(
            post.clone(),
            REFRESH,
            413,
            "/v1/tokens/shop/access_token/refresh",
            Some(SECRET),
            Some(json!({"stale": "x".repeat(70_000)})),
        ),
        case(
            post.clone(),
            REFRESH,
            429,
            "/v1/tokens/office/access_token/refresh",
            Some(SECRET),
            None,
        ),
        case(
            post.clone(),
            REFRESH,
            502,
            "/v1/tokens/down/access_token/refresh",
            Some(SECRET),
            None,
        ),
        case(get.clone(), STATUS, 200, STATUS, Some(SECRET), None),
        case(get.clone(), STATUS, 401, STATUS, None, None),
        case(get.clone(), STATUS, 403, STATUS, Some(FAR), None),
        case(
            get.clone(),
            JSSDK,
            200,
            format!("/v1/jssdk/office/signature{sign}"),
            Some(SECRET),
            None,
        ),
        case(
            get.clone(),
            JSSDK,
            400,
            "/v1/jssdk/shop/signature",
            Some(SECRET),
            None,
        ),
        case(
            get.clone(),
            JSSDK,
            401,
            format!("/v1/jssdk/shop/signature{sign}"),
            None,
            None,
        ),
        case(
            get.clone(),
            JSSDK,
            403,
            format!("/v1/jssdk/shop/signature{sign}"),
            Some(OTHER),
            None,
        ),
        case(
            get.clone(),
            JSSDK,
            404,
            format!("/v1/jssdk/hr/signature{sign}"),
            Some(SECRET),
            None,
        ),
        case(
            get.clone(),
            JSSDK,
            503,
            format!("/v1/jssdk/down/signature{sign}"),
            Some(SECRET),
            None,
        ),
        case(get.clone(), OPENAPI, 200, OPENAPI, None, None),
    ];
    let (put, delete) = (Method::PUT, Method::DELETE);
    const APPS: &str = "/v1/apps";
    const APP: &str = "/v1/apps/{app}";
    const RELOAD: &str = "/v1/reload";
    let reg = json!({"platform": "mp", "appid": "wx_reg", "secret": "reg_secret", "api_base": format!("http://127.0.0.1:{down}")});
    let registry_cases = [
        case(
            put.clone(),
            APP,
            201,
            "/v1/apps/reg",
            Some(SECRET),
            Some(reg.clone()),
        ),
        case(
            put.clone(),
            APP,
            200,
            "/v1/apps/reg",
            Some(SECRET),
            Some(reg.clone()),
        ),
        case(
            put.clone(),
            APP,
            400,
            "/v1/apps/reg2",
            Some(SECRET),
            Some(json!({"platform": "mp"})),
        ),
        case(
            put.clone(),
            APP,
            401,
            "/v1/apps/reg",
            None,
            Some(reg.clone()),
        ),
        case(
            put.clone(),
            APP,
            403,
            "/v1/apps/reg",
            Some(OTHER),
            Some(reg.clone()),
        ),
        case(
            put.clone(),
            APP,
            409,
            "/v1/apps/shop",
            Some(SECRET),
            Some(reg),
        ),
        case(get.clone(), APP, 200, "/v1/apps/reg", Some(SECRET), None),
        case(get.clone(), APP, 400, "/v1/apps/.x", Some(SECRET), None),
        case(get.clone(), APP, 401, "/v1/apps/reg", None, None),
        case(get.clone(), APP, 403, "/v1/apps/reg", Some(OTHER), None),
        case(get.clone(), APP, 404, "/v1/apps/nope", Some(SECRET), None),
        case(
            get.clone(),
            APPS,
            200,
            "/v1/apps?limit=2",
            Some(SECRET),
            None,
        ),
        case(
            get.clone(),
            APPS,
            400,
            "/v1/apps?limit=0",
            Some(SECRET),
            None,
        ),
        case(get.clone(), APPS, 401, "/v1/apps", None, None),
        case(get.clone(), APPS, 403, "/v1/apps", Some(OTHER), None),
        case(post.clone(), RELOAD, 200, RELOAD, Some(SECRET), None),
        case(post.clone(), RELOAD, 401, RELOAD, None, None),
        case(post.clone(), RELOAD, 403, RELOAD, Some(OTHER), None),
        Case {
            file: Some(format!(
                "{text}\n[apps.reg]\nplatform = \"mp\"\nappid = \"wx_reg\"\nsecret = \"s\"\n"
            )),
            ..case(post.clone(), RELOAD, 409, RELOAD, Some(SECRET), None)
        },
        Case {
            file: Some(text.replace("[apps.down]", "[apps.down]\ncolour = \"red\"")),
            ..case(post.clone(), RELOAD, 400, RELOAD, Some(SECRET), None)
        },
        case(delete.clone(), APP, 204, "/v1/apps/reg", Some(SECRET), None),
        case(delete.clone(), APP, 401, "/v1/apps/reg", None, None),
        case(delete.clone(), APP, 403, "/v1/apps/reg", Some(OTHER), None),
        case(delete.clone(), APP, 404, "/v1/apps/reg", Some(SECRET), None),
        case(
            delete.clone(),
            APP,
            409,
            "/v1/apps/shop",
            Some(SECRET),
            None,
        ),
    ];
    const PREAUTH: &str = "/v1/components/{app}/preauthcode";
    const AUTHORIZERS: &str = "/v1/components/{app}/authorizers";
    const AUTHORIZER: &str = "/v1/components/{app}/authorizers/{appid}";
    const SYNC: &str = "/v1/components/{app}/sync";
    let back = json!({"redirect_uri": "https://shop.example.com/authorised", "auth_type": 3});
    let imported = json!({"refresh_token": "refresh-token-from-elsewhere"});
    let authorizer = "/v1/components/platform/authorizers/wximported";
    // The 502s first: each meets the one fault queued on its endpoint.
    let component_cases = [
        case(
            post.clone(),
            PREAUTH,
            502,
            "/v1/components/platform/preauthcode",
            Some(SECRET),
            Some(back.clone()),
        ),
        case(
            post.clone(),
            PREAUTH,
            200,
            "/v1/components/platform/preauthcode",
            Some(SECRET),
            Some(back.clone()),
        ),
        case(
            post.clone(),
            PREAUTH,
            400,
            "/v1/components/platform/preauthcode",
            Some(SECRET),
            Some(json!({"redirect_uri": "ftp://x"})),
        ),
        case(
            post.clone(),
            PREAUTH,
            401,
            "/v1/components/platform/preauthcode",
            None,
            Some(back.clone()),
        ),
        case(
            post.clone(),
            PREAUTH,
            403,
            "/v1/components/platform/preauthcode",
            Some(OTHER),
            Some(back.clone()),
        ),
        case(
            post.clone(),
            PREAUTH,
            404,
            "/v1/components/shop/preauthcode",
            Some(SECRET),
            Some(back.clone()),
        ),
        case(
            post.clone(),
            PREAUTH,
            503,
            "/v1/components/deadplat/preauthcode",
            Some(SECRET),
            Some(back),
        ),
        case(
            get.clone(),
            AUTHORIZERS,
            200,
            "/v1/components/platform/authorizers?limit=10",
            Some(SECRET),
            None,
        ),
        case(
            get.clone(),
            AUTHORIZERS,
            400,
            "/v1/components/platform/authorizers?limit=0",
            Some(SECRET),
            None,
        ),
        case(
            get.clone(),
            AUTHORIZERS,
            401,
            "/v1/components/platform/authorizers",
            None,
            None,
        ),
        case(
            get.clone(),
            AUTHORIZERS,
            403,
            "/v1/components/platform/authorizers",
            Some(OTHER),
            None,
        ),
        case(
            get.clone(),
            AUTHORIZERS,
            404,
            "/v1/components/nope/authorizers",
            Some(SECRET),
            None,
        ),
        case(
            put.clone(),
            AUTHORIZER,
            201,
            authorizer,
            Some(SECRET),
            Some(imported.clone()),
        ),
        case(
            put.clone(),
            AUTHORIZER,
            200,
            authorizer,
            Some(SECRET),
            Some(imported.clone()),
        ),
        case(
            put.clone(),
            AUTHORIZER,
            400,
            authorizer,
            Some(SECRET),
            Some(json!({})),
        ),
        case(
            put.clone(),
            AUTHORIZER,
            401,
            authorizer,
            None,
            Some(imported.clone()),
        ),
        case(
            put.clone(),
            AUTHORIZER,
            403,
            authorizer,
            Some(OTHER),
            Some(imported.clone()),
        ),
        case(
            put.clone(),
            AUTHORIZER,
            404,
            "/v1/components/nope/authorizers/wx1",
            Some(SECRET),
            Some(imported),
        ),
        case(
            delete.clone(),
            AUTHORIZER,
            204,
            authorizer,
            Some(SECRET),
            None,
        ),
        case(delete.clone(), AUTHORIZER, 401, authorizer, None, None),
        case(
            delete.clone(),
            AUTHORIZER,
            403,
            authorizer,
            Some(OTHER),
            None,
        ),
        case(
            delete.clone(),
            AUTHORIZER,
            404,
            authorizer,
            Some(SECRET),
            None,
        ),
        case(
            post.clone(),
            SYNC,
            502,
            "/v1/components/platform/sync",
            Some(SECRET),
            None,
        ),
        case(
            post.clone(),
            SYNC,
            200,
            "/v1/components/platform/sync",
            Some(SECRET),
            None,
        ),
        case(
            post.clone(),
            SYNC,
            401,
            "/v1/components/platform/sync",
            None,
            None,
        ),
        case(
            post.clone(),
            SYNC,
            403,
            "/v1/components/platform/sync",
            Some(OTHER),
            None,
        ),
        case(
            post.clone(),
            SYNC,
            404,
            "/v1/components/nope/sync",
            Some(SECRET),
            None,
        ),
        case(
            post.clone(),
            SYNC,
            503,
            "/v1/components/deadplat/sync",
            Some(SECRET),
            None,
        ),
    ];
    let cases: Vec<Case> = cases
        .into_iter()
        .chain(registry_cases)
        .chain(component_cases)
        .collect();

    // Every documented (path, method, status) has a case, and every case is documented.
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        // Path-level `parameters` are no operation.
        for (method, op) in item
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| *k != "parameters")
        {
            for status in op["responses"].as_object().unwrap().keys() {
                documented.insert((path.clone(), method.to_uppercase(), status.clone()));
            }
        }
    }
    let covered: BTreeSet<_> = cases
        .iter()
        .map(|c| {
            (
                c.path.to_owned(),
                c.method.to_string(),
                c.status.to_string(),
            )
        })
        .collect();
    assert_eq!(
        documented, covered,
        "documented responses vs. exercised ones"
    );

    let mut problems = Vec::new();
    // Documented response headers: each must appear in some real response, and match
    // its schema wherever it appears.
    let mut headers_seen = BTreeSet::new();
    for c in &cases {
        if let Some(text) = &c.file {
            std::fs::write(&file, text).unwrap();
        }
        let mut request = app
            .client
            .request(c.method.clone(), format!("{}{}", app.base, c.url));
        if let Some(key) = c.key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = &c.body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let declared = &doc["paths"][c.path][c.method.as_str().to_lowercase()]["responses"]
            [c.status.to_string()]["headers"];
        for (name, header) in declared.as_object().into_iter().flatten() {
            let Some(value) = response.headers().get(name.as_str()) else {
                continue;
            };
            headers_seen.insert((c.path, c.status, name.clone()));
            let value = value.to_str().unwrap_or_default();
            let parsed = value.parse::<i64>().map(Value::from);
            match (header["schema"]["type"].as_str(), parsed) {
                (Some("integer"), Ok(number))
                    if number.as_i64() >= header["schema"]["minimum"].as_i64() => {}
                (kind, _) => problems.push(format!(
                    "{} {}: header {name}: {value:?} is not {kind:?}",
                    c.method, c.url
                )),
            }
        }
        let text = response.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let label = format!("{} {} -> {}", c.method, c.url, c.status);
        if status != StatusCode::from_u16(c.status).unwrap() {
            problems.push(format!("{label}: got {status}: {text}"));
            continue;
        }
        let op = &doc["paths"][c.path][c.method.as_str().to_lowercase()];
        let documented = &op["responses"][c.status.to_string()];
        if documented.get("content").is_none() {
            // A response documented without content (204) has none.
            if !text.is_empty() {
                problems.push(format!("{label}: documented without a body, got {text}"));
            }
            continue;
        }
        let schema = &documented["content"]["application/json"]["schema"];
        assert!(!schema.is_null(), "{label}: no JSON schema documented");
        check(&doc, schema, &body, &label, &mut problems);
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        let ops = item.as_object().unwrap().iter();
        for op in ops.filter(|(k, _)| *k != "parameters").map(|(_, op)| op) {
            for (status, response) in op["responses"].as_object().unwrap() {
                for name in response["headers"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|h| h.0)
                {
                    let seen = headers_seen
                        .iter()
                        .any(|(p, s, n)| p == path && s.to_string() == *status && n == name);
                    if !seen {
                        problems.push(format!("{path} {status}: header {name} never sent"));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The JS-SDK `url` parameter is declared with the rule the server applies: an
/// absolute http(s) URL (`format: uri` and the pattern), at most `maxLength` bytes.
#[tokio::test]
async fn the_jssdk_url_is_declared_with_the_rule_the_server_applies() {
    let doc: Value = serde_json::from_str(DOC).unwrap();
    let params = doc["paths"]["/v1/jssdk/{app}/signature"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let url = params.iter().find(|p| p["name"] == "url").unwrap();
    assert_eq!(url["schema"]["format"], "uri", "{url}");
    assert_eq!(
        url["schema"]["pattern"], "^[Hh][Tt][Tt][Pp][Ss]?://[^\\s]*$",
        "the pattern the cases below follow"
    );
    let max = usize::try_from(url["schema"]["maxLength"].as_u64().unwrap()).unwrap();

    let sim = apps::sim().await;
    let addr = sim.addr;
    let app = TestApp::start(sim, &config(&four_apps(addr))).await;
    apps::wait_served(&app, "office", "jsapi_ticket").await;
    let long = format!("https://a.example/{}", "x".repeat(max));
    let cases = [
        ("https://shop.example.com/pay?id=1", true),
        ("HTTP://SHOP.example.com", true),
        ("https://a.example/page#section two", true), // the fragment is not signed
        (&long[..max], true),
        (&long[..=max], false),
        ("ftp://a.example/", false),
        ("/relative/path", false),
        ("shop.example.com", false),
        ("https://a.example/with space", false),
        ("", false),
    ];
    for (page, valid) in cases {
        let encoded: String = form_urlencoded::byte_serialize(page.as_bytes()).collect();
        let response = app
            .client
            .get(format!(
                "{}/v1/jssdk/office/signature?url={encoded}",
                app.base
            ))
            .bearer_auth(SECRET)
            .send()
            .await
            .unwrap();
        let expected = if valid {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(response.status(), expected, "url {page:?}");
    }
}

/// The platform has its verify ticket, its component token and one authorizer; the
/// next preauthcode and authorizer-list calls meet a WeChat error (the 502 cases).
async fn open_platform_ready(app: &TestApp) {
    let events = format!("{}/wechat/component/platform/events", app.base);
    for (admin, body) in [
        (
            "push_ticket",
            json!({"component_appid": DEMO_COMPONENT_APPID, "url": events}),
        ),
        (
            "authorize",
            json!({"component_appid": DEMO_COMPONENT_APPID, "authorizer_appid": "wxopenapi", "url": events}),
        ),
    ] {
        let pushed: Value = app
            .sim
            .client
            .post(app.sim.url(&format!("/sim/component/{admin}")))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(pushed["reply"], "success", "{admin}: {pushed}");
    }
    apps::wait_served(app, "platform.wxopenapi", "access_token").await;
    for endpoint in [
        "/cgi-bin/component/api_create_preauthcode",
        "/cgi-bin/component/api_get_authorizer_list",
    ] {
        app.sim
            .fault(
                endpoint,
                1,
                json!({"errcode": 61003, "errmsg": "component is not authorized"}),
            )
            .await;
    }
}

#[test]
fn the_checker_catches_a_missing_required_property_and_a_wrong_type() {
    let doc: Value = serde_json::from_str(DOC).unwrap();
    let schema = json!({"$ref": "#/components/schemas/Token"});
    let mut problems = Vec::new();
    check(
        &doc,
        &schema,
        &json!({"app": "a", "name": "n", "value": 5}),
        "t",
        &mut problems,
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("missing required expires_in")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("expected string")),
        "{problems:?}"
    );
}
