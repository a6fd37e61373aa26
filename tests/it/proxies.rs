//! `server.trusted_proxies`: `X-Forwarded-For` / `X-Real-IP` believed from these peers
//! only, for clients' `networks` and for the logs. Real binary, real HTTP from
//! 127.0.0.1 (the "proxy").

use reqwest::StatusCode;

use crate::helpers::{MEMORY_STORE, TestSim, access_token_source, config_with, wait_until};
use crate::process::Server;

const KEY: &str = "office-network-key-0123";

/// A server whose client `office` may call from 198.51.100.0/24 only, with
/// `trusted_proxies` in `[server]`.
async fn server(sim: &TestSim, trusted_proxies: &str) -> (tempfile::TempDir, Server) {
    let text = config_with(
        MEMORY_STORE,
        "",
        &format!(
            r#"{}
[clients.office]
key = "{KEY}"
apps = "*"
tokens = "*"
networks = ["198.51.100.0/24"]
"#,
            access_token_source(sim.addr)
        ),
    )
    .replace(
        "[server]\n",
        &format!("[server]\ntrusted_proxies = {trusted_proxies}\n"),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    (dir, Server::start(&path).await)
}

const V1_PATH: &str = "/v1/tokens/default/access_token";

/// The status of a token request by `office` with `headers`, the same on `/v1` and on
/// `/wechat/token` (which the server answers before the router).
async fn status(server: &Server, headers: &[(&str, &str)]) -> StatusCode {
    let v1 = status_of(server, V1_PATH, headers).await;
    let seed = status_of(server, "/wechat/token?type=access_token", headers).await;
    assert_eq!(v1, seed, "/v1 and /wechat/token, {headers:?}");
    v1
}

async fn status_of(server: &Server, path: &str, headers: &[(&str, &str)]) -> StatusCode {
    let mut request = reqwest::Client::new()
        .get(format!("{}{path}", server.base))
        .bearer_auth(KEY);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap().status()
}

#[tokio::test]
async fn forwarded_addresses_are_believed_from_trusted_proxies_only() {
    let sim = TestSim::start(Default::default()).await;
    let (_dir, behind_proxy) = server(&sim, r#"["127.0.0.1/32", "10.0.0.0/8"]"#).await;
    // Wait for the token: a 403 must mean "refused", not "not fetched yet".
    wait_until(
        "the token is served",
        std::time::Duration::from_secs(10),
        || async {
            status_of(&behind_proxy, V1_PATH, &[("x-real-ip", "198.51.100.7")]).await
                == StatusCode::OK
        },
    )
    .await;
    let cases: [(&[(&str, &str)], StatusCode); 6] = [
        (&[("x-forwarded-for", "198.51.100.7")], StatusCode::OK),
        // The rightmost hop that is not a trusted proxy is the client; the client's
        // own claim to its left changes nothing.
        (
            &[("x-forwarded-for", "198.51.100.9, 203.0.113.5, 10.1.2.3")],
            StatusCode::FORBIDDEN,
        ),
        (
            &[("x-forwarded-for", "203.0.113.5, 198.51.100.9, 10.1.2.3")],
            StatusCode::OK,
        ),
        (&[("x-real-ip", "203.0.113.5")], StatusCode::FORBIDDEN),
        // No header: the proxy's own address, outside the client's networks.
        (&[], StatusCode::FORBIDDEN),
        // A header naming no address: unknown, refused.
        (&[("x-forwarded-for", "unknown")], StatusCode::FORBIDDEN),
    ];
    for (headers, expected) in cases {
        assert_eq!(
            status(&behind_proxy, headers).await,
            expected,
            "{headers:?}"
        );
    }
    // The refusal is logged with the forwarded address.
    let logs = behind_proxy.logs.clone();
    wait_until(
        "the refusal is logged",
        std::time::Duration::from_secs(5),
        || {
            let logs = logs.clone();
            async move { logs.lock().unwrap().contains(r#""peer":"203.0.113.5""#) }
        },
    )
    .await;

    // 127.0.0.1 is not a trusted proxy here: its headers are ignored.
    let (_dir2, direct) = server(&sim, r#"["10.0.0.0/8"]"#).await;
    wait_until(
        "the token is fetched",
        std::time::Duration::from_secs(10),
        || async {
            reqwest::Client::new()
                .get(format!("{}/readyz", direct.base))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
        },
    )
    .await;
    assert_eq!(
        status(&direct, &[("x-forwarded-for", "198.51.100.7")]).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(&direct, &[("x-real-ip", "198.51.100.7")]).await,
        StatusCode::FORBIDDEN
    );
}
