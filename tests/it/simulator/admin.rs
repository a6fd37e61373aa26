//! The /sim admin routes and the simulate command.

use super::*;

#[tokio::test]
async fn reset_forgets_tokens_counters_quota_and_faults() {
    let sim = spawn(SimConfig {
        daily_quota: 1,
        ..SimConfig::default()
    })
    .await;
    let token = sim.token().await;
    sim.fault(json!({"endpoint": "/cgi-bin/token", "count": 5, "drop": true}))
        .await;
    let (status, _) = sim.post("/sim/reset", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sim.probe(&token).await, 40014, "forgotten");
    let stats = sim.stats().await;
    assert_eq!(
        stats["calls"]["/cgi-bin/getcallbackip"], 1,
        "counters restarted"
    );
    assert_eq!(stats["calls"]["/cgi-bin/token"], 0);
    assert_eq!(stats["faults_pending"], json!({}));
    sim.token().await;
}

#[tokio::test]
async fn stats_count_failed_calls_per_endpoint_and_per_known_app() {
    let sim = spawn_default().await;
    sim.errcode(&format!(
        "/cgi-bin/token?grant_type=client_credential&appid={DEMO_APPID}&secret=wrong"
    ))
    .await;
    sim.errcode("/cgi-bin/token?grant_type=client_credential&appid=stranger&secret=x")
        .await;
    sim.probe("never-issued").await;
    let stats = sim.stats().await;
    assert_eq!(stats["calls"]["/cgi-bin/token"], 2);
    assert_eq!(stats["calls"]["/cgi-bin/getcallbackip"], 1);
    assert_eq!(
        stats["apps"],
        json!({DEMO_APPID: {"/cgi-bin/token": 1}}),
        "unknown apps are not listed"
    );
    assert_eq!(stats["issued"], json!({}));
    assert_eq!(sim.handle.sim.calls("/cgi-bin/token"), 2);
    assert_eq!(sim.handle.sim.calls("/cgi-bin/nope"), 0);
}

#[tokio::test]
async fn sim_valid_tells_why_a_credential_is_refused_and_needs_a_parameter() {
    let sim = spawn_default().await;
    let unknown = sim.valid("access_token=nope").await;
    assert_eq!(
        unknown,
        json!({"valid": false, "reason": "unknown", "errcode": 40014})
    );
    let token = sim.token().await;
    let valid = sim.valid(&format!("access_token={token}")).await;
    assert_eq!(
        (valid["valid"].as_bool(), valid["app"].as_str()),
        (Some(true), Some(DEMO_APPID))
    );
    assert_eq!(
        sim.valid(&format!("ticket={token}")).await["reason"],
        "unknown",
        "a token is not a ticket"
    );
    let (status, body) = sim.get("/sim/valid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("access_token")),
        "{body}"
    );
}

#[tokio::test]
async fn simulate_help_documents_every_flag_and_the_demo_app() {
    use clap::CommandFactory;
    let mut cli = wechat_token_server::cli::Cli::command();
    let help = cli
        .find_subcommand_mut("simulate")
        .map(|c| c.render_long_help().to_string())
        .unwrap_or_default();
    for needle in [
        "--bind",
        "--app",
        "--corp",
        "--expires-in",
        "--grace",
        "--daily-quota",
        "--apps-file",
        "--accept-any-app",
        "--component",
        "--component-rotate-every",
        "--component-push-every",
        "/sim/component/push_ticket",
        "secret-wx123",
        "max_in_flight",
        DEMO_APPID,
        DEMO_SECRET,
        DEMO_CORPID,
        DEMO_CORPSECRET,
        DEMO_COMPONENT_APPID,
        DEMO_COMPONENT_SECRET,
        DEMO_COMPONENT_TOKEN,
        DEMO_COMPONENT_AES_KEY,
    ] {
        assert!(
            help.contains(needle),
            "simulate --help lacks {needle}:\n{help}"
        );
    }
}

#[tokio::test]
async fn the_simulate_command_refuses_a_malformed_app_and_stops_on_shutdown() {
    use tokio_util::sync::CancellationToken;
    use wechat_token_server::cli::SimulateArgs;
    use wechat_token_server::simulator::run_cli;
    let args = |apps: Vec<&str>| SimulateArgs {
        bind: "127.0.0.1:0".parse().expect("an address"),
        apps: apps.into_iter().map(String::from).collect(),
        corps: Vec::new(),
        expires_in: 7200,
        grace: 300,
        daily_quota: 2000,
        apps_file: None,
        accept_any_app: false,
        components: Vec::new(),
        component_rotate_every: 0,
        component_push_every: None,
    };
    let err = run_cli(args(vec!["wx1-without-secret"]), CancellationToken::new()).await;
    let msg = err.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("--app expects ID:SECRET"), "{msg}");
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    let run = run_cli(args(vec!["wx1:s1"]), shutdown);
    let result = tokio::time::timeout(Duration::from_secs(10), run).await;
    assert!(matches!(result, Ok(Ok(()))), "{result:?}");
}
