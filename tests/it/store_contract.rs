//! One behaviour suite that every store backend passes: memory, embedded, redis.

use std::time::Duration;

use wechat_token_server::domain::CredentialKey;
use wechat_token_server::store::{
    EmbeddedStore, MemoryStore, RedisStore, SaveOutcome, StoredApp, StoredToken, TokenStore,
};

use crate::redis_server::{RedisCluster, RedisServer, SentinelSet, TlsRedis};

fn token(app: &str, name: &str, value: &str, version: u64) -> StoredToken {
    let now = wechat_token_server::domain::unix_millis(std::time::SystemTime::now());
    StoredToken {
        app: app.into(),
        name: name.into(),
        value: value.into(),
        expires_at_ms: now + 3_600_000,
        refreshed_at_ms: now,
        version,
        pending_since_ms: None,
        announced: true,
        generation: None,
    }
}

async fn store_contract(store: &dyn TokenStore) {
    assert!(store.load_all().await.unwrap().is_empty());
    let key = CredentialKey::new("default", "access_token");
    assert_eq!(store.load(&key).await.unwrap(), None);
    for t in [
        token("default", "access_token", "A1", 1),
        token("default", "ticket", "T1", 1),
        token("shop", "access_token", "S1", 1),
    ] {
        assert_eq!(store.save(&t).await.unwrap(), SaveOutcome::Saved);
    }
    assert_eq!(
        store
            .save(&token("default", "access_token", "A2", 2))
            .await
            .unwrap(),
        SaveOutcome::Saved
    );
    // An older or equal version never replaces what is stored.
    assert_eq!(
        store
            .save(&token("default", "access_token", "OLD", 1))
            .await
            .unwrap(),
        SaveOutcome::Outdated
    );
    assert_eq!(
        store
            .save(&token("default", "access_token", "SAME", 2))
            .await
            .unwrap(),
        SaveOutcome::Outdated
    );
    assert_eq!(store.load(&key).await.unwrap().unwrap().value, "A2");

    let mut all = store.load_all().await.unwrap();
    all.sort_by_key(StoredToken::key);
    let values: Vec<_> = all
        .iter()
        .map(|t| (t.app.as_str(), t.name.as_str(), t.value.as_str(), t.version))
        .collect();
    assert_eq!(
        values,
        [
            ("default", "access_token", "A2", 2),
            ("default", "ticket", "T1", 1),
            ("shop", "access_token", "S1", 1)
        ]
    );
    store.ping().await.unwrap();
    pending_marks(store).await;
    compare_and_set(store).await;
    deletes_and_generations(store).await;
    registry_records(store).await;
    many_records(store).await;
}

/// Deleting a token (its app removed) leaves nothing to load; a generation is kept.
async fn deletes_and_generations(store: &dyn TokenStore) {
    let key = CredentialKey::new("gone", "access_token");
    let mut t = token("gone", "access_token", "G1", 1);
    t.generation = Some("0123abcd".into());
    store.save(&t).await.unwrap();
    store.mark_pending(&key, 5).await.unwrap();
    let loaded = store.load(&key).await.unwrap().unwrap();
    assert_eq!(loaded.generation.as_deref(), Some("0123abcd"));
    store.delete(&key).await.unwrap();
    assert_eq!(store.load(&key).await.unwrap(), None);
    assert!(
        store
            .load_all()
            .await
            .unwrap()
            .iter()
            .all(|t| t.app != "gone")
    );
    store.delete(&key).await.unwrap(); // nothing there: no error
    // A save after the delete starts again from nothing.
    assert_eq!(
        store
            .save_over(&token("gone", "access_token", "G2", 1), 0)
            .await
            .unwrap(),
        SaveOutcome::Saved
    );
    assert_eq!(pending_of(store, &key).await, None);
}

/// Registry records are kept as given, replaced in place and deleted.
async fn registry_records(store: &dyn TokenStore) {
    let app = |name: &str, record: &str| StoredApp {
        name: name.into(),
        record: record.into(),
    };
    let before = store.apps_revision().await.unwrap();
    store.save_app(&app("a", "{\"v\":1}")).await.unwrap();
    store.save_app(&app("b", "{\"v\":2}")).await.unwrap();
    store.save_app(&app("a", "{\"v\":3}")).await.unwrap();
    let mut apps = store.load_apps().await.unwrap();
    apps.sort_by(|x, y| x.name.cmp(&y.name));
    assert_eq!(apps, [app("a", "{\"v\":3}"), app("b", "{\"v\":2}")]);
    assert!(store.delete_app("a").await.unwrap());
    assert!(!store.delete_app("a").await.unwrap());
    assert_eq!(store.load_apps().await.unwrap(), [app("b", "{\"v\":2}")]);
    if store.is_shared() {
        assert!(
            store.apps_revision().await.unwrap() > before,
            "every change moves the revision"
        );
    }
}

/// Hundreds of apps, more than one read batch (Redis pipelines, the embedded store's
/// reading threads): every record and quota count comes back, in order for quotas.
async fn many_records(store: &dyn TokenStore) {
    const APPS: usize = 300;
    let saves = (0..APPS).flat_map(|i| {
        ["access_token", "ticket"].map(|name| async move {
            let t = token(&format!("many{i}"), name, &format!("V{i}{name}"), 1);
            store.save(&t).await
        })
    });
    for saved in futures_util::future::join_all(saves).await {
        assert_eq!(saved.unwrap(), SaveOutcome::Saved);
    }
    let all = store.load_all().await.unwrap();
    let many: Vec<_> = all.iter().filter(|t| t.app.starts_with("many")).collect();
    assert_eq!(many.len(), 2 * APPS);
    assert!(
        many.iter()
            .all(|t| t.value == format!("V{}{}", &t.app[4..], t.name))
    );

    for (app, uses) in [("many0", 1), ("many299", 2), ("many7", 3)] {
        for _ in 0..uses {
            store.add_quota_use(app, "/cgi-bin/token", 9).await.unwrap();
        }
    }
    let names: Vec<String> = (0..2 * APPS).map(|i| format!("many{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let counts = store.load_quotas(&names, 9).await.unwrap();
    assert_eq!(counts.len(), names.len());
    let used = |i: usize| counts[i].get("/cgi-bin/token").copied();
    assert_eq!(
        (used(0), used(299), used(7), used(1)),
        (Some(1), Some(2), Some(3), None)
    );
    assert!(counts[APPS..].iter().all(|c| c.is_empty()));
    for (i, name) in names.iter().enumerate().take(10) {
        assert_eq!(
            counts[i],
            store.load_quota(name, 9).await.unwrap(),
            "{name}"
        );
    }
}

/// `save_over`: a save only over exactly the version the writer last saw, whatever
/// the versions: a writer whose version ran ahead while the store was unreachable
/// cannot replace what another stored meanwhile.
async fn compare_and_set(store: &dyn TokenStore) {
    let key = CredentialKey::new("cas", "access_token");
    let fresh = token("cas", "access_token", "C1", 1);
    assert_eq!(
        store.save_over(&fresh, 5).await.unwrap(),
        SaveOutcome::Outdated
    );
    assert_eq!(
        store.save_over(&fresh, 0).await.unwrap(),
        SaveOutcome::Saved
    );
    // Another instance stores version 2 over 1.
    let theirs = token("cas", "access_token", "THEIRS", 2);
    assert_eq!(
        store.save_over(&theirs, 1).await.unwrap(),
        SaveOutcome::Saved
    );
    // Ours ran ahead to version 9 while it could not reach the store, which it last saw
    // at version 1: refused, although 9 > 2.
    let ours = token("cas", "access_token", "OURS", 9);
    assert_eq!(
        store.save_over(&ours, 1).await.unwrap(),
        SaveOutcome::Outdated
    );
    assert_eq!(store.load(&key).await.unwrap().unwrap().value, "THEIRS");
    // Over what it now sees, it is stored; an equal or older version never is.
    assert_eq!(store.save_over(&ours, 2).await.unwrap(), SaveOutcome::Saved);
    let older = token("cas", "access_token", "OLDER", 3);
    assert_eq!(
        store.save_over(&older, 9).await.unwrap(),
        SaveOutcome::Outdated
    );
    assert_eq!(store.load(&key).await.unwrap().unwrap().value, "OURS");
}

async fn pending_of(store: &dyn TokenStore, key: &CredentialKey) -> Option<u64> {
    store.load(key).await.unwrap().unwrap().pending_since_ms
}

/// A pending mark: kept earliest-first, shown by load and load_all, cleared by a save
/// or by a clear naming it, and not written without a stored token.
async fn pending_marks(store: &dyn TokenStore) {
    let key = CredentialKey::new("default", "access_token");
    assert_eq!(pending_of(store, &key).await, None);
    store.mark_pending(&key, 1_000).await.unwrap();
    store.mark_pending(&key, 2_000).await.unwrap();
    assert_eq!(
        pending_of(store, &key).await,
        Some(1_000),
        "the earliest mark counts"
    );
    let all = store.load_all().await.unwrap();
    let listed = all.iter().find(|t| t.key() == key).unwrap();
    assert_eq!(listed.pending_since_ms, Some(1_000));
    store.clear_pending(&key, 2_000).await.unwrap();
    assert_eq!(
        pending_of(store, &key).await,
        Some(1_000),
        "only the mark named is cleared"
    );
    store.clear_pending(&key, 1_000).await.unwrap();
    assert_eq!(pending_of(store, &key).await, None);
    store.mark_pending(&key, 3_000).await.unwrap();
    let mut newer = token("default", "access_token", "A3", 3);
    newer.pending_since_ms = Some(42); // never stored: a save clears the mark
    assert_eq!(store.save(&newer).await.unwrap(), SaveOutcome::Saved);
    assert_eq!(pending_of(store, &key).await, None);
    let fresh = CredentialKey::new("other", "access_token");
    store.mark_pending(&fresh, 5_000).await.unwrap();
    assert_eq!(store.load(&fresh).await.unwrap(), None);
}

#[tokio::test]
async fn memory_store_passes_the_contract() {
    store_contract(&MemoryStore::new()).await;
}

#[tokio::test]
async fn embedded_store_passes_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    store_contract(&EmbeddedStore::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn redis_store_passes_the_contract() {
    let redis = RedisServer::start().await;
    store_contract(&RedisStore::open(&redis.url(), "").unwrap()).await;
    // A prefix keeps two deployments apart on one Redis.
    store_contract(&RedisStore::open(&redis.url(), "other:").unwrap()).await;
}

#[tokio::test]
async fn redis_over_tls_passes_the_contract() {
    let redis = TlsRedis::start().await;
    let ca = std::fs::read(&redis.ca).unwrap();
    store_contract(&RedisStore::open_with_ca(&redis.url(), "", Some(&ca)).unwrap()).await;
    // A certificate of another CA is refused, by name, and nothing is written.
    let other = tempfile::tempdir().unwrap();
    let (wrong_ca, _, _) = crate::certs::make_certs(other.path(), "other");
    let wrong = std::fs::read(wrong_ca).unwrap();
    let store = RedisStore::open_with_ca(&redis.url(), "x:", Some(&wrong)).unwrap();
    let error = store.ping().await.unwrap_err().to_string();
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    // Without the CA, the system's roots do not know the test CA either.
    let store = RedisStore::open(&redis.url(), "y:").unwrap();
    assert!(store.ping().await.is_err());
}

#[tokio::test]
async fn redis_through_sentinel_passes_the_contract() {
    let set = SentinelSet::start().await;
    store_contract(&RedisStore::open(&set.url(), "").unwrap()).await;
    // It wrote to the master, with the seed's plain keys.
    assert_eq!(set.master.cli(&["GET", "access_token"]).await, "A3");
}

#[tokio::test]
async fn redis_cluster_passes_the_contract() {
    let cluster = RedisCluster::start().await;
    store_contract(&RedisStore::open(&cluster.url(), "").unwrap()).await;
    store_contract(&RedisStore::open(&cluster.url(), "other:").unwrap()).await;
    // Each token's keys carry its hash tag; no plain keys are written.
    let record = cluster
        .cli(&["HGET", "wts:meta:{default:access_token}", "value"])
        .await;
    assert_eq!(record, "A3");
    assert_eq!(cluster.cli(&["EXISTS", "access_token"]).await, "0");
    // The records are spread over the nodes, and a full read found them all.
    let mut holding = 0;
    for node in &cluster.nodes {
        if node.cli(&["DBSIZE"]).await != "0" {
            holding += 1;
        }
    }
    assert!(holding >= 2, "only {holding} node holds keys");
}

#[tokio::test]
async fn embedded_store_survives_reopening_and_skips_corrupt_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let saved = token("default", "access_token", "A1", 1);
    store.save(&saved).await.unwrap();
    std::fs::write(dir.path().join("tokens/default/ticket.json"), b"{\"torn").unwrap();
    std::fs::write(dir.path().join("tokens/default/.tmpXYZ"), b"partial").unwrap();
    drop(store); // one store per folder: it holds the folder's lock
    let reopened = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(reopened.load_all().await.unwrap(), [saved]);
    // A torn file does not block the next save.
    reopened
        .save(&token("default", "ticket", "T1", 1))
        .await
        .unwrap();
}

#[test]
fn embedded_store_refuses_a_folder_it_cannot_create() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err = EmbeddedStore::open(&file)
        .err()
        .expect("a file is not a folder");
    assert!(err.to_string().contains("plain-file"), "{err}");
}

#[tokio::test]
async fn the_redis_change_log_names_only_what_changed_since_a_revision() {
    let redis = RedisServer::start().await;
    change_log(&RedisStore::open(&redis.url(), "").unwrap()).await;
    // A Redis that lost its data goes back in revision: the caller reads everything.
    let (later, _) = RedisStore::open(&redis.url(), "")
        .unwrap()
        .changes_since(0)
        .await
        .unwrap()
        .unwrap();
    redis.cli(&["FLUSHALL"]).await;
    let store = RedisStore::open(&redis.url(), "").unwrap();
    let (after_flush, _) = store.changes_since(later).await.unwrap().unwrap();
    assert!(after_flush < later);
}

/// In cluster mode the log is written beside each token's script, not in it: it must
/// name the same changes.
#[tokio::test]
async fn the_redis_cluster_change_log_names_only_what_changed_since_a_revision() {
    let cluster = RedisCluster::start().await;
    change_log(&RedisStore::open(&cluster.url(), "").unwrap()).await;
}

async fn change_log(store: &RedisStore) {
    for app in ["a", "b", "c"] {
        store
            .save(&token(app, "access_token", "V1", 1))
            .await
            .unwrap();
    }
    let (seen, all) = store.changes_since(0).await.unwrap().unwrap();
    assert_eq!(all.len(), 3);
    let (same, none) = store.changes_since(seen).await.unwrap().unwrap();
    assert_eq!((same, none.len()), (seen, 0), "nothing changed since");
    store
        .save(&token("b", "access_token", "V2", 2))
        .await
        .unwrap();
    let key_c = CredentialKey::new("c", "access_token");
    store.mark_pending(&key_c, 7).await.unwrap();
    let (later, changed) = store.changes_since(seen).await.unwrap().unwrap();
    assert!(later > seen);
    let mut changed: Vec<String> = changed.iter().map(ToString::to_string).collect();
    changed.sort();
    assert_eq!(changed, ["b/access_token", "c/access_token"]);
    // A mark already set, or a save refused, changes nothing.
    store.mark_pending(&key_c, 9).await.unwrap();
    store
        .save(&token("b", "access_token", "OLD", 1))
        .await
        .unwrap();
    let (same, none) = store.changes_since(later).await.unwrap().unwrap();
    assert_eq!((same, none.len()), (later, 0));
}

#[tokio::test]
async fn redis_leases_admit_one_holder_and_expire() {
    let redis = RedisServer::start().await;
    let store = RedisStore::open(&redis.url(), "").unwrap();
    let key = CredentialKey::new("default", "access_token");
    let ttl = Duration::from_millis(300);
    assert!(store.try_lease(&key, "a", ttl).await.unwrap());
    assert!(!store.try_lease(&key, "b", ttl).await.unwrap());
    assert!(store.renew_lease(&key, "a", ttl).await.unwrap());
    assert!(!store.renew_lease(&key, "b", ttl).await.unwrap());
    store.release_lease(&key, "b").await.unwrap(); // not b's: no effect
    assert!(!store.try_lease(&key, "b", ttl).await.unwrap());
    store.release_lease(&key, "a").await.unwrap();
    assert!(store.try_lease(&key, "b", ttl).await.unwrap());
    // b dies without releasing: the lease expires by itself.
    crate::helpers::wait_until("the lease expires", Duration::from_secs(5), || async {
        store.try_lease(&key, "c", ttl).await.unwrap()
    })
    .await;
    // An instance takes over a lease it still holds from an earlier attempt (a request
    // that reached Redis after it gave up), and only its own.
    let long = Duration::from_secs(30);
    let key = CredentialKey::new("default", "ticket");
    assert!(store.try_lease(&key, "node1#0001", long).await.unwrap());
    assert!(!store.try_lease(&key, "node2#0002", long).await.unwrap());
    assert!(
        !store.try_lease(&key, "node#0003", long).await.unwrap(),
        "a prefix is not the owner"
    );
    assert!(store.try_lease(&key, "node1#0004", long).await.unwrap());
    store.release_lease(&key, "node1#0001").await.unwrap(); // the old attempt's: no effect
    assert!(!store.try_lease(&key, "node2#0005", long).await.unwrap());
    assert!(store.renew_lease(&key, "node1#0004", long).await.unwrap());
}

#[tokio::test]
async fn a_redis_that_is_down_gives_errors_not_panics() {
    let mut redis = RedisServer::start().await;
    let store = RedisStore::open(&redis.url(), "").unwrap();
    redis.kill();
    assert!(store.ping().await.is_err());
    assert!(store.load_all().await.is_err());
    assert!(
        store
            .save(&token("default", "access_token", "A", 1))
            .await
            .is_err()
    );
    redis.restart_empty().await;
    crate::helpers::wait_until("the store reconnects", Duration::from_secs(10), || async {
        store.ping().await.is_ok()
    })
    .await;
    assert_eq!(
        store
            .save(&token("default", "access_token", "A", 1))
            .await
            .unwrap(),
        SaveOutcome::Saved
    );
}
