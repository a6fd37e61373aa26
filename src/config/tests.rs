use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "WTS_REQUEST_SECRET" => Some("s3cret-value-0123456789".into()),
        "WECHAT_APPID" => Some("wx123".into()),
        "WECHAT_SECRET" => Some("appsecret-value".into()),
        _ => None,
    }
}

const SEED: &str = r#"
[server]
bind = "127.0.0.1:12123"
request_secret = "${WTS_REQUEST_SECRET}"

[refresh]
token_expire_time = 7000

[sources.ticket]
url = "https://api.weixin.qq.com/cgi-bin/ticket/getticket"
args = { type = "jsapi", access_token = "{{access_token}}" }

[sources.access_token]
url = "https://api.weixin.qq.com/cgi-bin/token"
method = "GET"
args = { grant_type = "client_credential", appid = "${WECHAT_APPID}", secret = "${WECHAT_SECRET}" }
"#;

fn err(text: &str) -> String {
    Config::parse(text, &env).unwrap_err().to_string()
}

#[test]
fn the_seed_example_loads_with_dependencies_first() {
    let config = Config::parse(SEED, &env).unwrap();
    assert_eq!(
        config.server.request_secret.expose(),
        "s3cret-value-0123456789"
    );
    assert_eq!(
        config.refresh.token_expire_time,
        Some(Duration::from_secs(7000))
    );
    let app = config.app(DEFAULT_APP).unwrap();
    let names: Vec<_> = app.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["access_token", "ticket"]);
    assert_eq!(app.source("ticket").unwrap().deps, ["access_token"]);
    assert_eq!(app.source("ticket").unwrap().token_field, "ticket");
    assert_eq!(config.store.backend, Backend::Embedded);
}

#[test]
fn unknown_keys_are_rejected_with_their_path() {
    let text = SEED.replace("method = \"GET\"", "methd = \"GET\"");
    let e = err(&text);
    assert!(
        e.contains("sources.access_token") && e.contains("methd"),
        "{e}"
    );
    let e = err(&format!("{SEED}\n[servr]\nbind = \"x\""));
    assert!(e.contains("servr"), "{e}");
}

#[test]
fn syntax_errors_name_the_line() {
    let e = err("[server]\nbind = \n");
    assert!(e.contains("line 2"), "{e}");
}

#[test]
fn bad_values_name_their_key() {
    let e = err(&SEED.replace("127.0.0.1:12123", "nowhere"));
    assert!(e.contains("server.bind"), "{e}");
    let e = err(&format!("{SEED}\n[store]\nbackend = \"mysql\""));
    assert!(e.contains("store.backend") && e.contains("mysql"), "{e}");
    let e = err(&SEED.replace("token_expire_time = 7000", "token_expire_time = -1"));
    assert!(e.contains("refresh.token_expire_time"), "{e}");
    let e = err(&SEED.replace("token_expire_time = 7000", "token_expire_time = 2"));
    assert!(
        e.contains("refresh.token_expire_time") && e.contains("at least 60"),
        "{e}"
    );
    let e = err(&SEED.replace("https://api.weixin.qq.com/cgi-bin/token", "ftp://x"));
    assert!(e.contains("sources.access_token.url"), "{e}");
    let e = err(&format!("{SEED}\n[store]\nbackend = \"redis\""));
    assert!(e.contains("store.redis_url"), "{e}");
}

#[test]
fn a_missing_environment_variable_is_named() {
    let e = err(&SEED.replace("${WECHAT_SECRET}", "${NOT_SET_ANYWHERE}"));
    assert!(
        e.contains("sources.access_token.args.secret") && e.contains("NOT_SET_ANYWHERE"),
        "{e}"
    );
}

#[test]
fn the_request_secret_is_required() {
    let e = err(&SEED.replace("request_secret = \"${WTS_REQUEST_SECRET}\"", ""));
    assert!(e.contains("server.request_secret"), "{e}");
}

#[test]
fn dangling_references_and_cycles_are_rejected() {
    let e = err(&SEED.replace("{{access_token}}", "{{acces_token}}"));
    assert!(
        e.contains("sources.ticket") && e.contains("acces_token"),
        "{e}"
    );
    let cyclic = SEED.replace("\"${WECHAT_SECRET}\"", "\"{{ticket}}\"");
    let e = err(&cyclic);
    assert!(
        e.contains("cycle") && e.contains("access_token -> ticket -> access_token"),
        "{e}"
    );
    let e = err(&SEED.replace("{{access_token}}", "{{ticket}}"));
    assert!(e.contains("itself"), "{e}");
}

#[test]
fn no_sources_is_an_error() {
    let e = err("[server]\nrequest_secret = \"request-secret-0123456789\"\n");
    assert!(e.contains("sources"), "{e}");
}

#[test]
fn post_sources_may_have_a_json_body_with_templates() {
    let text = format!(
        "{SEED}\n[sources.other]\nurl = \"http://127.0.0.1:1/x\"\nmethod = \"POST\"\nbody = {{ token = \"{{{{access_token}}}}\", n = 1 }}\n"
    );
    let config = Config::parse(&text, &env).unwrap();
    let other = config.app(DEFAULT_APP).unwrap().source("other").unwrap();
    assert_eq!(other.deps, ["access_token"]);
    assert_eq!(other.body.as_ref().unwrap()["n"], 1);
    let bad = text.replace("method = \"POST\"\nbody", "body");
    assert!(err(&bad).contains("sources.other.body"));
}

#[test]
fn masked_output_hides_every_secret() {
    let config = Config::parse(
        &format!("{SEED}\n[store]\nredis_url = \"redis://:pw-value@h:6379/0\""),
        &env,
    )
    .unwrap();
    let shown = config.to_masked_toml();
    for secret in ["s3cret-value-0123456789", "appsecret-value", "pw-value"] {
        assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
    }
    assert!(shown.contains("wx123"), "{shown}");
    assert!(shown.contains("{{access_token}}"), "{shown}");
    // The output is itself valid TOML.
    shown.parse::<toml::Table>().unwrap();
}

#[test]
fn the_shipped_example_config_is_valid() {
    let text = include_str!("../../wechat-token-server.example.toml");
    let config = Config::parse(text, &env).unwrap();
    assert_eq!(config.server.bind.port(), 12123);
    assert_eq!(config.server.max_connections, 10_000);
    assert_eq!(config.server.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(config.server.idle_timeout, Duration::from_secs(60));
    assert_eq!(config.refresh.force_min_interval, Duration::from_secs(30));
    // The live part is a preset, so JS-SDK signatures work on the documented path.
    assert_eq!(config.apps.len(), 1);
    assert_eq!(config.apps[0].name, "shop");
    assert!(config.apps[0].preset.is_some());
    assert!(config.apps[0].source("jsapi_ticket").is_some());
    assert_eq!(
        config.quota,
        QuotaConfig {
            daily_limit: 2000,
            reserve: 200
        }
    );
    assert_eq!(
        config.refresh.needs_person_retry_delay,
        Duration::from_secs(300)
    );
}

#[test]
fn the_example_configs_seed_compatible_section_works_uncommented() {
    let text = include_str!("../../wechat-token-server.example.toml");
    let start = text.find("# --- seed-compatible sources ---").unwrap();
    let end = text
        .find("# --- end of seed-compatible sources ---")
        .unwrap();
    // The sources instead of the preset.
    let apps = text.find("[apps.shop]").unwrap();
    let live_apps_end = text[apps..].find("\n\n").unwrap() + apps;
    let mut seed = String::from(&text[..apps]);
    seed.push_str(&text[live_apps_end..start]);
    for line in text[start..end].lines().skip(1) {
        seed.push_str(
            line.strip_prefix("# ")
                .unwrap_or(line.trim_start_matches('#')),
        );
        seed.push('\n');
    }
    let config = Config::parse(&seed, &env).unwrap();
    let default = config.app(DEFAULT_APP).unwrap();
    let names: Vec<&str> = default.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["access_token", "ticket"]);
}

#[test]
fn inbound_limits_default_to_the_spec_and_are_validated() {
    let server = Config::parse(SEED, &env).unwrap().server;
    assert_eq!(server.max_connections, 10_000);
    assert_eq!(server.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(server.header_read_timeout, Duration::from_secs(30));
    assert_eq!(server.idle_timeout, Duration::from_secs(60));

    let with = |lines: &str| SEED.replace("[server]\n", &format!("[server]\n{lines}\n"));
    let server = Config::parse(
        &with("max_connections = 2\nshutdown_timeout = 0.5\nheader_read_timeout = 1\nidle_timeout = 2.5"),
        &env,
    )
    .unwrap()
    .server;
    assert_eq!(server.max_connections, 2);
    assert_eq!(server.shutdown_timeout, Duration::from_millis(500));
    assert_eq!(server.header_read_timeout, Duration::from_secs(1));
    assert_eq!(server.idle_timeout, Duration::from_millis(2500));

    for (line, key) in [
        ("max_connections = 0", "server.max_connections"),
        ("max_connections = -5", "server.max_connections"),
        ("shutdown_timeout = 0", "server.shutdown_timeout"),
        ("shutdown_timeout = -1", "server.shutdown_timeout"),
        ("header_read_timeout = 0", "server.header_read_timeout"),
        ("idle_timeout = \"60\"", "server.idle_timeout"),
    ] {
        let e = err(&with(line));
        assert!(e.contains(key), "{line}: {e}");
    }
}

#[test]
fn masked_output_shows_the_inbound_limits() {
    let shown = Config::parse(
        &SEED.replace("[server]\n", "[server]\nmax_connections = 7\n"),
        &env,
    )
    .unwrap()
    .to_masked_toml();
    let table: toml::Table = shown.parse().unwrap();
    let server = &table["server"];
    assert_eq!(server["max_connections"].as_integer(), Some(7), "{shown}");
    assert_eq!(server["shutdown_timeout"].as_float(), Some(30.0), "{shown}");
    assert_eq!(
        server["header_read_timeout"].as_float(),
        Some(30.0),
        "{shown}"
    );
    assert_eq!(server["idle_timeout"].as_float(), Some(60.0), "{shown}");
}

#[test]
fn the_quota_reserve_must_leave_room_for_force_refreshes() {
    let config = Config::parse(SEED, &env).unwrap();
    assert_eq!(config.quota.discretionary_limit(), 1800);
    let e = err(&format!(
        "{SEED}\n[quota]\ndaily_limit = 100\nreserve = 100\n"
    ));
    assert!(e.contains("quota.reserve"), "{e}");
    let e = err(&format!("{SEED}\n[quota]\ndaily_limit = 0\nreserve = 0\n"));
    assert!(e.contains("quota.daily_limit"), "{e}");
    let e = err(&format!("{SEED}\n[quota]\nreserve = -1\n"));
    assert!(e.contains("quota.reserve"), "{e}");
    let e = err(&format!("{SEED}\n[quota]\nlimit = 5\n"));
    assert!(e.contains("limit"), "{e}");
}

#[test]
fn per_app_metrics_are_on_unless_turned_off() {
    assert!(Config::parse(SEED, &env).unwrap().metrics.per_app);
    let off = Config::parse(&format!("{SEED}\n[metrics]\nper_app = false\n"), &env).unwrap();
    assert!(!off.metrics.per_app);
    assert!(off.to_masked_toml().contains("per_app = false"));
    let e = err(&format!("{SEED}\n[metrics]\nper_app = \"no\"\n"));
    assert!(e.contains("metrics.per_app"), "{e}");
    let e = err(&format!("{SEED}\n[metrics]\nper_token = true\n"));
    assert!(e.contains("per_token"), "{e}");
}

const PRESETS: &str = r#"
[server]
request_secret = "request-secret-0123456789"

[apps.shop]
platform = "mp"
appid = "wx1"
secret = "mp-secret-value"
tickets = ["jsapi", "wx_card"]
api_base = ["http://127.0.0.1:1", "http://127.0.0.1:2/"]

[apps.stable]
platform = "mp"
appid = "wx2"
secret = "stable-secret-value"
stable_token = true

[apps.office]
platform = "wecom"
corpid = "ww1"
corpsecret = "corp-secret-value"
agentid = "1000002"
tickets = ["jsapi", "agent_config"]
"#;

fn names(app: &AppConfig) -> Vec<&str> {
    app.sources.iter().map(|s| s.name.as_str()).collect()
}

#[test]
fn presets_expand_into_sources_with_fixed_names_and_fallback_hosts() {
    let config = Config::parse(PRESETS, &env).unwrap();
    let shop = config.app("shop").unwrap();
    assert_eq!(
        names(shop),
        ["access_token", "jsapi_ticket", "wx_card_ticket"]
    );
    let token = shop.source("access_token").unwrap();
    let urls: Vec<String> = token.urls.iter().map(ToString::to_string).collect();
    assert_eq!(
        urls,
        [
            "http://127.0.0.1:1/cgi-bin/token",
            "http://127.0.0.1:2/cgi-bin/token"
        ]
    );
    assert!(token.forced.is_none());
    let card = shop.source("wx_card_ticket").unwrap();
    assert_eq!(card.deps, ["access_token"]);
    assert_eq!(card.token_field, "ticket");
    assert!(
        card.args
            .iter()
            .any(|(k, v)| k == "type" && v.to_string() == "wx_card")
    );
    assert_eq!(shop.preset.as_ref().unwrap().id, "wx1");

    let stable = config.app("stable").unwrap();
    assert_eq!(names(stable), ["access_token"]);
    let token = stable.source("access_token").unwrap();
    assert_eq!(token.method, Method::POST);
    assert_eq!(
        token.urls[0].as_str(),
        "https://api.weixin.qq.com/cgi-bin/stable_token"
    );
    assert_eq!(token.body.as_ref().unwrap()["force_refresh"], false);
    let forced = token.forced.as_ref().unwrap();
    assert_eq!(forced.body["force_refresh"], true);
    assert_eq!(
        forced.probe_urls[0].as_str(),
        "https://api.weixin.qq.com/cgi-bin/getcallbackip"
    );

    let office = config.app("office").unwrap();
    let mut office_names = names(office);
    office_names.sort_unstable();
    assert_eq!(
        office_names,
        ["access_token", "agent_config_ticket", "jsapi_ticket"]
    );
    assert_eq!(office.sources[0].name, "access_token");
    assert_eq!(
        office.source("jsapi_ticket").unwrap().urls[0].as_str(),
        "https://qyapi.weixin.qq.com/cgi-bin/get_jsapi_ticket"
    );
    assert_eq!(
        office.source("agent_config_ticket").unwrap().urls[0].as_str(),
        "https://qyapi.weixin.qq.com/cgi-bin/ticket/get"
    );
    assert_eq!(office.preset.as_ref().unwrap().agentid, Some(1_000_002));
}

#[test]
fn preset_errors_name_their_key() {
    let cases = [
        (
            PRESETS.replace("appid = \"wx1\"", "appidd = \"wx1\""),
            "apps.shop.appidd",
        ),
        (
            PRESETS.replace("corpid = \"ww1\"", "stable_token = true"),
            "apps.office.stable_token",
        ),
        (
            PRESETS.replace("\"jsapi\", \"wx_card\"", "\"jsapi\", \"card\""),
            "apps.shop.tickets",
        ),
        (
            PRESETS.replace("agentid = \"1000002\"\n", ""),
            "apps.office.agentid",
        ),
        (
            PRESETS.replace("agentid = \"1000002\"", "agentid = \"x\""),
            "apps.office.agentid",
        ),
        (
            PRESETS.replace("platform = \"wecom\"", "platform = \"component\""),
            "apps.office.agentid",
        ),
        (
            PRESETS.replace("platform = \"wecom\"", "platform = \"qq\""),
            "apps.office.platform",
        ),
        (
            PRESETS.replace("platform = \"wecom\"\n", ""),
            "apps.office.platform",
        ),
        (
            PRESETS.replace("\"http://127.0.0.1:1\"", "\"ftp://x\""),
            "apps.shop.api_base",
        ),
        (
            PRESETS.replace("secret = \"mp-secret-value\"", ""),
            "apps.shop",
        ),
        (
            PRESETS.replace("[apps.stable]", "[apps.\"bad name\"]"),
            "apps.bad name",
        ),
    ];
    for (text, key) in cases {
        let e = err(&text);
        assert!(e.starts_with(&format!("{key}:")), "expected {key}: got {e}");
    }
    // A WeCom table under the Open Platform: its first foreign key is named.
    assert!(
        err(&PRESETS.replace("platform = \"wecom\"", "platform = \"component\""))
            .starts_with("apps.office.agentid: unknown field")
    );
}

#[test]
fn the_default_app_of_sources_and_apps_default_cannot_both_exist() {
    let text =
        format!("{SEED}\n[apps.default]\nplatform = \"mp\"\nappid = \"a\"\nsecret = \"b\"\n");
    let e = err(&text);
    assert!(e.starts_with("apps.default:"), "{e}");
    // Without [sources], an app may be called default.
    let text = "[server]\nrequest_secret = \"request-secret-0123456789\"\n[apps.default]\nplatform = \"mp\"\nappid = \"a\"\nsecret = \"b\"\n";
    assert!(Config::parse(text, &env).is_ok());
}

#[test]
fn masked_output_hides_preset_and_client_secrets() {
    let text = format!(
        "{PRESETS}\n[clients.web]\nkey = \"client-key-value-0123\"\napps = [\"shop\"]\ntokens = \"*\"\n"
    );
    let shown = Config::parse(&text, &env).unwrap().to_masked_toml();
    for secret in [
        "mp-secret-value",
        "stable-secret-value",
        "corp-secret-value",
        "client-key-value-0123",
    ] {
        assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
    }
    assert!(
        shown.contains("ww1") && shown.contains("platform = \"wecom\""),
        "{shown}"
    );
    shown.parse::<toml::Table>().unwrap();
}

#[test]
fn clients_are_validated_and_errors_name_their_key() {
    let base = format!("{PRESETS}\n[clients.web]\n");
    let ok = format!(
        "{base}key = \"client-key-value-0123\"\napps = [\"shop\"]\ntokens = [\"jsapi_ticket\"]\nnetworks = [\"10.0.0.0/8\"]\n"
    );
    let config = Config::parse(&ok, &env).unwrap();
    let client = &config.clients[0];
    assert_eq!(client.key_sha256, sha256("client-key-value-0123"));
    assert!(client.apps.allows("shop") && !client.apps.allows("office"));
    assert!(!client.refresh);
    let cases = [
        (
            format!("{base}apps = \"*\"\ntokens = \"*\"\n"),
            "clients.web",
        ),
        (
            format!("{base}key = \"short\"\napps = \"*\"\ntokens = \"*\"\n"),
            "clients.web.key",
        ),
        (
            format!("{base}key_sha256 = \"abc\"\napps = \"*\"\ntokens = \"*\"\n"),
            "clients.web.key_sha256",
        ),
        // An app the config does not define may be a registry app; a name that can
        // never be an app is refused.
        (
            ok.replace("[\"shop\"]", "[\"../shop\"]"),
            "clients.web.apps",
        ),
        (
            ok.replace("[\"jsapi_ticket\"]", "[\"agent_config_ticket\"]"),
            "clients.web.tokens",
        ),
        (
            ok.replace("10.0.0.0/8", "10.0.0.0/99"),
            "clients.web.networks",
        ),
        (ok.replace("networks", "netwrks"), "clients.web.netwrks"),
        (ok.replace("client-key-value-0123", "s"), "clients.web.key"),
    ];
    for (text, key) in cases {
        let e = err(&text);
        assert!(e.starts_with(&format!("{key}:")), "expected {key}: got {e}");
    }
}

#[test]
fn max_concurrent_calls_defaults_to_32_and_is_validated() {
    let refresh = Config::parse(SEED, &env).unwrap().refresh;
    assert_eq!(refresh.max_concurrent_calls, 32);
    let with = |line: &str| SEED.replace("[refresh]\n", &format!("[refresh]\n{line}\n"));
    let refresh = Config::parse(&with("max_concurrent_calls = 1024"), &env)
        .unwrap()
        .refresh;
    assert_eq!(refresh.max_concurrent_calls, 1024);
    for line in [
        "max_concurrent_calls = 0",
        "max_concurrent_calls = 1025",
        "max_concurrent_calls = -1",
        "max_concurrent_calls = \"8\"",
    ] {
        let e = err(&with(line));
        assert!(e.contains("refresh.max_concurrent_calls"), "{line}: {e}");
    }
    let e = err(&with("max_concurrent_calls = 0"));
    assert!(e.contains("between 1 and 1024"), "{e}");
    let shown = Config::parse(&with("max_concurrent_calls = 7"), &env)
        .unwrap()
        .to_masked_toml();
    assert!(shown.contains("max_concurrent_calls = 7"), "{shown}");
}
