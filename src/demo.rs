//! `demo`: the simulator and a server wired to it, in one process, for a first look
//! with no WeChat account, no Redis and no config file.

use std::path::PathBuf;

use anyhow::Context;
use rand::Rng;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::cli::DemoArgs;
use crate::config::Config;
use crate::simulator::{
    DEMO_APPID, DEMO_COMPONENT_AES_KEY, DEMO_COMPONENT_APPID, DEMO_COMPONENT_SECRET,
    DEMO_COMPONENT_TOKEN, DEMO_CORPID, DEMO_CORPSECRET, DEMO_SECRET, SimConfig, Simulator,
};

/// The demo's config, in the same TOML a user would write; placeholders in `@..@`.
const DEMO_CONFIG: &str = r#"
[server]
bind = "@BIND@"
request_secret = "@REQUEST_SECRET@"

[store]
backend = "embedded"
path = "@STORE_PATH@"

[sources.access_token]
url = "http://@SIMULATOR@/cgi-bin/token"
args = { grant_type = "client_credential", appid = "@APPID@", secret = "@APPSECRET@" }

[sources.ticket]
url = "http://@SIMULATOR@/cgi-bin/ticket/getticket"
args = { type = "jsapi", access_token = "{{access_token}}" }

# A WeCom app as a preset, to show the JSON API and JS-SDK signatures.
[apps.office]
platform = "wecom"
corpid = "@CORPID@"
corpsecret = "@CORPSECRET@"
agentid = 1000002
tickets = ["jsapi", "agent_config"]
api_base = ["http://@SIMULATOR@"]

# An Open Platform (第三方平台) with the simulator's demo component: at start the demo
# has the simulator push a verify ticket and authorise two accounts.
[apps.platform]
platform = "component"
component_appid = "@COMPONENT_APPID@"
component_appsecret = "@COMPONENT_SECRET@"
token = "@COMPONENT_TOKEN@"
encoding_aes_key = "@COMPONENT_AES_KEY@"
authorizer_tickets = ["jsapi"]
api_base = ["http://@SIMULATOR@"]
"#;

/// The accounts the demo platform has authorised.
const DEMO_AUTHORIZERS: [&str; 2] = ["wx_demo_authorizer_1", "wx_demo_authorizer_2"];

/// Stands for the token to report in the printed force-refresh URL.
pub const STALE_PLACEHOLDER: &str = "REJECTED_TOKEN";

/// Runs the demo until `shutdown`.
///
/// # Errors
/// When a port cannot be bound or the store cannot be opened.
pub async fn run(args: DemoArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let sim_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the simulator")?;
    let sim_addr = sim_listener.local_addr()?;
    let simulator = Simulator::new(SimConfig::default());
    let sim_task = tokio::spawn(simulator.serve(sim_listener, shutdown.clone()));

    let listener = TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| {
            format!(
                "cannot listen on 127.0.0.1:{} (try --port 0 for a free port)",
                args.port
            )
        })?;
    let addr = listener.local_addr()?;

    // Kept alive until the demo ends, then removed.
    let temp_dir;
    let store_path = if args.keep_data {
        PathBuf::from("./demo-data")
    } else {
        temp_dir = tempfile::tempdir().context("cannot create a temporary folder")?;
        temp_dir.path().to_owned()
    };
    let secret: String = format!("{:032x}", rand::rng().random::<u128>());
    let text = DEMO_CONFIG
        .replace("@BIND@", &addr.to_string())
        .replace("@REQUEST_SECRET@", &secret)
        .replace(
            "@STORE_PATH@",
            &store_path.display().to_string().replace('\\', "/"),
        )
        .replace("@SIMULATOR@", &sim_addr.to_string())
        .replace("@APPSECRET@", DEMO_SECRET)
        .replace("@APPID@", DEMO_APPID)
        .replace("@CORPSECRET@", DEMO_CORPSECRET)
        .replace("@CORPID@", DEMO_CORPID)
        .replace("@COMPONENT_APPID@", DEMO_COMPONENT_APPID)
        .replace("@COMPONENT_SECRET@", DEMO_COMPONENT_SECRET)
        .replace("@COMPONENT_TOKEN@", DEMO_COMPONENT_TOKEN)
        .replace("@COMPONENT_AES_KEY@", DEMO_COMPONENT_AES_KEY);
    let config = Config::parse(&text, &|_| None).context("demo config")?;
    let app = App::build(config, listener).await?;

    let base = format!("http://{addr}");
    println!(
        "wechat-token-server demo: a WeChat simulator at http://{sim_addr} and the server at {base}"
    );
    println!();
    println!("  access_token:   {base}/wechat/token?type=access_token&secret={secret}");
    println!("  jsapi ticket:   {base}/wechat/token?type=ticket&secret={secret}");
    // With `stale=`: without it, a second force refresh within
    // refresh.force_min_interval (30 s) returns the same token, which looks broken.
    println!(
        "  force refresh:  {base}/wechat/token/forcerefresh?type=access_token&secret={secret}&stale={STALE_PLACEHOLDER}"
    );
    println!(
        "                  (replace {STALE_PLACEHOLDER} with the token WeChat rejected, e.g. the one the first URL returns)"
    );
    println!("  status page:    {base}/");
    println!("  metrics:        {base}/metrics");
    println!();
    println!("  JSON API (a WeCom app, \"office\"):");
    println!("    curl -H 'Authorization: Bearer {secret}' {base}/v1/tokens/office/access_token");
    println!(
        "    curl -H 'Authorization: Bearer {secret}' '{base}/v1/jssdk/office/signature?url=https://example.com/page'"
    );
    println!("    curl {base}/v1/openapi.json");
    println!();
    println!("  Open Platform (\"platform\", two authorised accounts):");
    println!(
        "    curl -H 'Authorization: Bearer {secret}' {base}/v1/components/platform/authorizers"
    );
    println!(
        "    curl -H 'Authorization: Bearer {secret}' {base}/v1/tokens/platform.{}/access_token",
        DEMO_AUTHORIZERS[0]
    );
    println!();
    println!("  is it valid?:   http://{sim_addr}/sim/valid?access_token=<token>");
    println!("  WeChat calls:   http://{sim_addr}/sim/stats");
    println!();
    println!("Store: {} . Press Ctrl-C to stop.", store_path.display());

    // Served once `run` accepts: the simulator pushes as WeChat would.
    tokio::spawn(open_platform_pushes(
        format!("http://{sim_addr}"),
        format!("{base}/wechat/component/platform/events"),
    ));
    app.run(shutdown.clone()).await?;
    shutdown.cancel();
    sim_task
        .await
        .context("simulator task")?
        .context("simulator")?;
    Ok(())
}

/// Has the simulator push a verify ticket to the demo platform, then authorise
/// [`DEMO_AUTHORIZERS`], as WeChat does after a platform is set up and merchants
/// authorise it.
async fn open_platform_pushes(simulator: String, events: String) {
    let client = reqwest::Client::new();
    let mut calls = vec![(
        "push_ticket",
        serde_json::json!({"component_appid": DEMO_COMPONENT_APPID, "url": events}),
    )];
    for appid in DEMO_AUTHORIZERS {
        calls.push((
            "authorize",
            serde_json::json!({"component_appid": DEMO_COMPONENT_APPID, "authorizer_appid": appid, "url": events}),
        ));
    }
    for (admin, body) in calls {
        let sent = client
            .post(format!("{simulator}/sim/component/{admin}"))
            .json(&body)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        if let Err(error) = sent {
            tracing::error!(%error, admin, "the demo's Open Platform push failed");
            return;
        }
    }
}
