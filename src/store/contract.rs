//! One behaviour suite that every store backend must pass.

use super::*;

fn token(app: &str, name: &str, value: &str, version: u64) -> StoredToken {
    StoredToken {
        app: app.into(),
        name: name.into(),
        value: value.into(),
        expires_at_ms: 2_000_000_000_000,
        refreshed_at_ms: 1_999_999_000_000,
        version,
    }
}

async fn store_contract(store: &dyn TokenStore) {
    assert!(store.load_all().await.unwrap().is_empty());
    store
        .save(&token("default", "access_token", "A1", 1))
        .await
        .unwrap();
    store
        .save(&token("default", "ticket", "T1", 1))
        .await
        .unwrap();
    store
        .save(&token("shop", "access_token", "S1", 1))
        .await
        .unwrap();
    store
        .save(&token("default", "access_token", "A2", 2))
        .await
        .unwrap();
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
    assert_eq!(all[0], token("default", "access_token", "A2", 2));

    quota_contract(store).await;
}

async fn quota_contract(store: &dyn TokenStore) {
    let day = 19_723;
    assert!(store.load_quota("default", day).await.unwrap().is_empty());
    for expected in 1..=3 {
        let n = store
            .add_quota_use("default", "/cgi-bin/token", day)
            .await
            .unwrap();
        assert_eq!(n, expected);
    }
    store
        .add_quota_use("default", "/cgi-bin/ticket/getticket", day)
        .await
        .unwrap();
    store
        .add_quota_use("shop", "/cgi-bin/token", day)
        .await
        .unwrap();
    let counts = store.load_quota("default", day).await.unwrap();
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [
            ("/cgi-bin/ticket/getticket".to_owned(), 1),
            ("/cgi-bin/token".to_owned(), 3)
        ]
    );
    // A new WeChat day starts from zero.
    assert!(
        store
            .load_quota("default", day + 1)
            .await
            .unwrap()
            .is_empty()
    );
    let n = store
        .add_quota_use("default", "/cgi-bin/token", day + 1)
        .await
        .unwrap();
    assert_eq!(n, 1);
    store.ping().await.unwrap();
}

#[tokio::test]
async fn memory_store_keeps_the_latest_token_per_credential() {
    store_contract(&MemoryStore::new()).await;
}

#[tokio::test]
async fn embedded_store_keeps_the_latest_token_per_credential() {
    let dir = tempfile::tempdir().unwrap();
    store_contract(&EmbeddedStore::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn embedded_store_survives_reopening_and_skips_corrupt_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    store
        .save(&token("default", "access_token", "A1", 1))
        .await
        .unwrap();
    std::fs::write(dir.path().join("tokens/default/ticket.json"), b"{\"torn").unwrap();
    std::fs::write(dir.path().join("tokens/default/.tmpXYZ"), b"partial").unwrap();
    store
        .add_quota_use("default", "/cgi-bin/token", 7)
        .await
        .unwrap();
    drop(store);
    let reopened = EmbeddedStore::open(dir.path()).unwrap();
    let all = reopened.load_all().await.unwrap();
    assert_eq!(all, [token("default", "access_token", "A1", 1)]);
    let quota = reopened.load_quota("default", 7).await.unwrap();
    assert_eq!(quota.get("/cgi-bin/token"), Some(&1));
    std::fs::write(dir.path().join("quota/default.json"), b"{\"torn").unwrap();
    assert!(reopened.load_quota("default", 7).await.unwrap().is_empty());
}

#[tokio::test]
async fn embedded_store_ping_fails_when_its_folder_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    store.ping().await.unwrap();
    std::fs::remove_dir_all(dir.path().join("tokens")).unwrap();
    std::fs::write(dir.path().join("tokens"), b"not a folder").unwrap();
    assert!(store.ping().await.is_err());
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
