//! The `simulate` command: flags to [`SimConfig`], bind, print what is accepted, serve.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{
    ComponentAccount, DEMO_APPID, DEMO_COMPONENT_APPID, DEMO_COMPONENT_SECRET, DEMO_CORPID,
    DEMO_CORPSECRET, DEMO_SECRET, SimConfig, Simulator,
};
use crate::cli::SimulateArgs;

/// Splits an `ID:SECRET` flag value. The secret may contain ':'; the id may not.
///
/// # Errors
/// When there is no ':' or a side is empty. The message names `flag` and never repeats
/// the value, which may hold a secret.
pub fn parse_credential(flag: &str, value: &str) -> anyhow::Result<(String, String)> {
    let Some((id, secret)) = value.split_once(':') else {
        bail!("{flag} expects ID:SECRET (e.g. {flag} wx123:abc), but the value has no ':'");
    };
    if id.trim().is_empty() || secret.is_empty() {
        bail!("{flag} expects ID:SECRET with neither part empty");
    }
    Ok((id.trim().to_owned(), secret.to_owned()))
}

/// Splits a `--component APPID:SECRET:TOKEN:AESKEY` value and checks the key. The secret
/// may contain ':'; the appid, Token and EncodingAESKey may not.
///
/// # Errors
/// Fewer than four parts, an empty one, or an unusable Token or EncodingAESKey. The
/// message never repeats the value, which holds secrets.
pub fn parse_component(value: &str) -> anyhow::Result<ComponentAccount> {
    const SHAPE: &str = "--component expects APPID:SECRET:TOKEN:AESKEY";
    let mut right = value.rsplitn(3, ':');
    let (Some(aes_key), Some(token), Some(rest)) = (right.next(), right.next(), right.next())
    else {
        bail!("{SHAPE}, but the value has fewer than four ':'-separated parts");
    };
    let Some((appid, secret)) = rest.split_once(':') else {
        bail!("{SHAPE}, but the value has fewer than four ':'-separated parts");
    };
    let appid = appid.trim();
    if [appid, secret, token, aes_key].iter().any(|p| p.is_empty()) {
        bail!("{SHAPE} with no part empty");
    }
    let account = ComponentAccount::new(appid, secret, token, aes_key);
    account
        .crypt()
        .with_context(|| format!("--component {appid}: bad TOKEN or AESKEY"))?;
    Ok(account)
}

/// Parses the text of an `--apps-file`: one `APPID:SECRET` a line; blank lines and
/// lines starting with `#` are skipped. `file` names it in errors, with the line number;
/// a secret is never repeated.
///
/// # Errors
/// A line that is not `APPID:SECRET`.
pub fn parse_apps_file(file: &str, text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut apps = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let app = parse_credential("--apps-file", line)
            .with_context(|| format!("{file}, line {}", number + 1))?;
        apps.push(app);
    }
    Ok(apps)
}

fn read_apps_file(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let name = path.display().to_string();
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read --apps-file {name}"))?;
    parse_apps_file(&name, &text)
}

/// Builds the simulator's settings from the command line.
///
/// # Errors
/// A malformed `--app`/`--corp` or `--apps-file` line, an unreadable `--apps-file`, an
/// appid given twice, or a zero `--expires-in`.
pub fn config_from_args(args: &SimulateArgs) -> anyhow::Result<SimConfig> {
    let mut apps = args
        .apps
        .iter()
        .map(|v| parse_credential("--app", v))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(path) = &args.apps_file {
        apps.extend(read_apps_file(path)?);
    }
    let mut seen = HashSet::new();
    if let Some((dup, _)) = apps.iter().find(|(id, _)| !seen.insert(id)) {
        bail!("app {dup} is given twice (--app or --apps-file); an app has one secret");
    }
    // A corp may have several secrets (one per WeCom app), so only exact repeats are odd,
    // and harmless.
    let corps = args
        .corps
        .iter()
        .map(|v| parse_credential("--corp", v))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if args.expires_in == 0 {
        bail!("--expires-in must be at least 1 second");
    }
    let components = args
        .components
        .iter()
        .map(|v| parse_component(v))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut seen = HashSet::new();
    if let Some(dup) = components.iter().find(|c| !seen.insert(&c.appid)) {
        bail!(
            "component {} is given twice (--component); a component has one secret",
            dup.appid
        );
    }
    if args.component_push_every == Some(0) {
        bail!("--component-push-every must be at least 1 second");
    }
    Ok(SimConfig {
        apps,
        corps,
        expires_in: Duration::from_secs(args.expires_in),
        grace: Duration::from_secs(args.grace),
        daily_quota: args.daily_quota,
        accept_any_app: args.accept_any_app,
        components,
        component_rotate_every: args.component_rotate_every,
        component_push_every: args.component_push_every.map(Duration::from_secs),
    })
}

/// Runs `wechat-token-server simulate` until `shutdown` is cancelled.
///
/// # Errors
/// Bad flags (see [`config_from_args`]), or the address can't be bound.
pub async fn run_cli(args: SimulateArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = config_from_args(&args)?;
    let listener = TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("cannot listen on {} (--bind)", args.bind))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    println!("{}", banner(&config, &addr.to_string()));
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the simulator has no authentication and is reachable from other hosts");
    }
    tracing::info!(%addr, apps = config.apps.len(), corps = config.corps.len(), "WeChat simulator listening");
    Simulator::new(config)
        .serve(listener, shutdown)
        .await
        .context("serving the WeChat simulator")
}

/// How many ids the banner lists before "and N more": a start with 10,000 apps
/// should not print them all.
const BANNER_IDS: usize = 10;

/// What the user reads on start: where, which apps (secrets only for the public demo),
/// the rules in force, and a first command to try.
fn banner(config: &SimConfig, addr: &str) -> String {
    let ids = |list: &[(String, String)]| {
        let mut ids: Vec<_> = list.iter().map(|(id, _)| id.as_str()).collect();
        ids.dedup();
        if ids.len() > BANNER_IDS {
            let more = ids.len() - BANNER_IDS;
            ids.truncate(BANNER_IDS);
            return format!("{} and {more} more", ids.join(", "));
        }
        ids.join(", ")
    };
    let any = if config.accept_any_app {
        "\n  any other appid or corpid: secret \"secret-ID\" (--accept-any-app)"
    } else {
        ""
    };
    let apps = if config.apps.is_empty() {
        format!("{DEMO_APPID} (demo, secret {DEMO_SECRET})")
    } else {
        ids(&config.apps)
    };
    let corps = if config.corps.is_empty() {
        format!("{DEMO_CORPID} (demo, corpsecret {DEMO_CORPSECRET})")
    } else {
        ids(&config.corps)
    };
    let components = if config.components.is_empty() {
        format!("{DEMO_COMPONENT_APPID} (demo, secret {DEMO_COMPONENT_SECRET}; see --help)")
    } else {
        let list: Vec<_> = config
            .components
            .iter()
            .map(|c| (c.appid.clone(), String::new()))
            .collect();
        ids(&list)
    };
    let (try_appid, try_secret) = config
        .apps
        .first()
        .map_or((DEMO_APPID, DEMO_SECRET), |(id, _)| (id.as_str(), "SECRET"));
    format!(
        "WeChat simulator listening on http://{addr}\n\
         \x20 Official Accounts / Mini Programs: {apps}\n\
         \x20 WeCom corps: {corps}{any}\n\
         \x20 Open Platform components: {components}\n\
         \x20 expires_in {}s, grace {}s, daily quota {} per app and API\n\
         \x20 try: curl 'http://{addr}/cgi-bin/token?grant_type=client_credential&appid={try_appid}&secret={try_secret}'\n\
         \x20 admin: http://{addr}/sim/stats (see docs/simulator.md)",
        config.expires_in.as_secs(),
        config.grace.as_secs(),
        config.daily_quota,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_splits_at_the_first_colon() {
        let parsed = parse_credential("--app", "wx1:se:cret").ok();
        assert_eq!(parsed, Some(("wx1".into(), "se:cret".into())));
    }

    #[test]
    fn a_malformed_credential_is_refused_without_echoing_it() {
        for bad in ["nocolon", ":secret", "wx1:", ":"] {
            let e = parse_credential("--app", bad).err().map(|e| e.to_string());
            let e = e.unwrap_or_default();
            assert!(e.contains("--app expects ID:SECRET"), "{bad}: {e}");
            assert!(!e.contains("nocolon") && !e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn a_component_splits_into_four_parts_with_colons_only_in_the_secret() {
        let key = super::super::DEMO_COMPONENT_AES_KEY;
        let parsed = parse_component(&format!("wxc: se:cret :tok:{key}")).ok();
        let want = ComponentAccount::new("wxc", " se:cret ", "tok", key);
        assert_eq!(parsed, Some(want));
    }

    #[test]
    fn a_bad_component_is_refused_without_echoing_its_secrets() {
        let key = super::super::DEMO_COMPONENT_AES_KEY;
        for bad in [
            "wxc:topsecret:tok".to_owned(),
            format!(":topsecret:tok:{key}"),
            format!("wxc:topsecret::{key}"),
            "wxc:topsecret:tok:shortkey".to_owned(),
        ] {
            let e = parse_component(&bad).err().map(|e| format!("{e:#}"));
            let e = e.unwrap_or_default();
            assert!(e.contains("--component"), "{bad}: {e}");
            assert!(!e.contains("topsecret") && !e.contains(key), "{e}");
        }
        let e = parse_component("wxc:topsecret:tok:shortkey").err();
        let e = e.map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(e.contains("43 characters"), "{e}");
    }

    #[test]
    fn an_apps_file_skips_comments_and_blank_lines() {
        let text = "# ours\nwx1:s1\n\n  wx2:s:2  \n   # indented comment\n";
        let apps = parse_apps_file("apps.txt", text).ok();
        let want = vec![("wx1".into(), "s1".into()), ("wx2".into(), "s:2".into())];
        assert_eq!(apps, Some(want));
    }

    #[test]
    fn a_bad_apps_file_line_is_named_by_file_and_number_without_its_secret() {
        let e = parse_apps_file("apps.txt", "wx1:s1\n# c\nwx2-topsecret\n").err();
        let e = e.map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(
            e.contains("apps.txt, line 3") && e.contains("ID:SECRET"),
            "{e}"
        );
        assert!(!e.contains("topsecret"), "{e}");
    }

    #[test]
    fn the_banner_shortens_a_long_list_of_apps() {
        let config = SimConfig {
            apps: (0..1000).map(|i| (format!("wx{i}"), "s".into())).collect(),
            accept_any_app: true,
            ..SimConfig::default()
        };
        let text = banner(&config, "127.0.0.1:1");
        assert!(
            text.contains("wx9 and 990 more") && !text.contains("wx10,"),
            "{text}"
        );
        assert!(text.contains("secret-ID"), "{text}");
    }

    #[test]
    fn the_banner_shows_the_demo_secret_but_never_a_real_one() {
        let demo = banner(&SimConfig::default(), "127.0.0.1:1");
        assert!(demo.contains(DEMO_SECRET) && demo.contains(DEMO_CORPSECRET));
        let real = SimConfig {
            apps: vec![("wx1".into(), "topsecret".into())],
            ..SimConfig::default()
        };
        let text = banner(&real, "127.0.0.1:1");
        assert!(
            text.contains("wx1") && !text.contains("topsecret"),
            "{text}"
        );
    }
}
