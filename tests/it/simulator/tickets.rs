//! Tickets: jsapi, wx_card, the WeCom corp and agent_config tickets.

use super::*;

#[tokio::test]
async fn a_ticket_needs_a_currently_valid_access_token() {
    let sim = spawn_default().await;
    let getticket = |t: &str| format!("/cgi-bin/ticket/getticket?access_token={t}&type=jsapi");
    assert_eq!(sim.errcode(&getticket("never-issued")).await, 40014);
    assert_eq!(
        sim.errcode("/cgi-bin/ticket/getticket?type=jsapi").await,
        41001
    );
    let old = sim.token().await;
    let new = sim.token().await;
    sim.advance(GRACE);
    assert_eq!(sim.errcode(&getticket(&old)).await, 40001);
    let ticket = sim.ticket(&new, "jsapi").await;
    assert!(sim.handle.sim.ticket_valid(&ticket));
    sim.advance(LIFE);
    assert_eq!(sim.errcode(&getticket(&new)).await, 42001);
    assert_eq!(
        sim.errcode(&format!("/cgi-bin/ticket/getticket?access_token={new}"))
            .await,
        42001
    );
    let stats = sim.stats().await;
    assert_eq!(
        stats["apps"][DEMO_APPID]["/cgi-bin/ticket/getticket"], 4,
        "calls with issued tokens count for their app"
    );
}

#[tokio::test]
async fn a_new_ticket_leaves_the_previous_one_valid_for_the_grace_only() {
    let sim = spawn_default().await;
    let token = sim.token().await;
    let first = sim.ticket(&token, "jsapi").await;
    let second = sim.ticket(&token, "jsapi").await;
    assert_ne!(first, second);
    sim.advance(GRACE - SLACK);
    assert_eq!(sim.valid(&format!("ticket={first}")).await["valid"], true);
    sim.advance(SLACK);
    let verdict = sim.valid(&format!("ticket={first}")).await;
    assert_eq!(
        (verdict["valid"].as_bool(), verdict["reason"].as_str()),
        (Some(false), Some("replaced"))
    );
    assert!(sim.handle.sim.ticket_valid(&second));
    assert!(
        !sim.handle.sim.access_token_valid(&second),
        "a ticket is not an access_token"
    );
}

#[tokio::test]
async fn jsapi_and_wx_card_tickets_are_separate_and_other_types_are_invalid_args() {
    let sim = spawn_default().await;
    let token = sim.token().await;
    let jsapi = sim.ticket(&token, "jsapi").await;
    let card = sim.ticket(&token, "wx_card").await;
    sim.ticket(&token, "wx_card").await;
    sim.advance(GRACE);
    assert!(
        sim.handle.sim.ticket_valid(&jsapi),
        "a wx_card ticket does not replace the jsapi one"
    );
    assert!(!sim.handle.sim.ticket_valid(&card));
    let path = format!("/cgi-bin/ticket/getticket?access_token={token}&type=nope");
    assert_eq!(sim.errcode(&path).await, 40097);
    let verdict = sim.valid(&format!("ticket={jsapi}")).await;
    assert_eq!(
        (verdict["kind"].as_str(), verdict["app"].as_str()),
        (Some("jsapi_ticket"), Some(DEMO_APPID))
    );
}

#[tokio::test]
async fn wecom_corp_and_agent_tickets_need_a_valid_wecom_token() {
    let sim = spawn_default().await;
    let corp = sim.corp_token().await;
    let reply = sim
        .wx(&format!("/cgi-bin/get_jsapi_ticket?access_token={corp}"))
        .await;
    assert_eq!(
        (reply["errcode"].as_i64(), reply["expires_in"].as_u64()),
        (Some(0), Some(LIFE))
    );
    let corp_ticket = reply["ticket"].as_str().unwrap_or_default().to_owned();
    let agent = format!("/cgi-bin/ticket/get?access_token={corp}&type=agent_config");
    let reply = sim.wx(&agent).await;
    assert_eq!(
        (reply["errcode"].as_i64(), reply["errmsg"].as_str()),
        (Some(0), Some("ok"))
    );
    let agent_ticket = reply["ticket"].as_str().unwrap_or_default().to_owned();
    assert!(
        sim.handle.sim.ticket_valid(&corp_ticket) && sim.handle.sim.ticket_valid(&agent_ticket)
    );
    assert_ne!(corp_ticket, agent_ticket);
    assert_eq!(
        sim.errcode(&format!(
            "/cgi-bin/ticket/get?access_token={corp}&type=jsapi"
        ))
        .await,
        40097
    );
    let mp = sim.token().await;
    assert_eq!(
        sim.errcode(&format!("/cgi-bin/get_jsapi_ticket?access_token={mp}"))
            .await,
        40014
    );
    assert_eq!(
        sim.errcode(&format!(
            "/cgi-bin/ticket/get?access_token={mp}&type=agent_config"
        ))
        .await,
        40014
    );
    assert_eq!(sim.errcode("/cgi-bin/get_jsapi_ticket").await, 41001);
    assert_eq!(
        sim.errcode("/cgi-bin/ticket/get?type=agent_config").await,
        41001
    );
}
