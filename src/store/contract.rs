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
    drop(store);
    let reopened = EmbeddedStore::open(dir.path()).unwrap();
    let all = reopened.load_all().await.unwrap();
    assert_eq!(all, [token("default", "access_token", "A1", 1)]);
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
