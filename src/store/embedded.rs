//! `backend = "embedded"`: one small JSON file per token under `store.path`.
//!
//! Each write goes to a temporary file in the same folder, is fsynced, then renamed
//! over the old file, and the folder is fsynced: after a crash at any point the file
//! holds either the old or the new token, never a torn one. A handful of tokens
//! refreshed every couple of hours needs nothing heavier than this.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{Error, SaveOutcome, StoredToken, TokenStore};
use crate::domain::CredentialKey;

pub struct EmbeddedStore {
    root: PathBuf,
    /// Serialises read-compare-write of one process's saves. One process per folder:
    /// an embedded store is not shared (use Redis for that).
    writes: tokio::sync::Mutex<()>,
}

impl EmbeddedStore {
    /// Opens (creating it if needed) the store folder.
    ///
    /// # Errors
    /// When the folder cannot be created or written.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let root = path.join("tokens");
        std::fs::create_dir_all(&root).map_err(|source| io(&root, source))?;
        // Fail now, not at the first refresh, when the folder is not writable.
        let probe = tempfile::NamedTempFile::new_in(&root).map_err(|source| io(&root, source))?;
        drop(probe);
        Ok(Self {
            root,
            writes: tokio::sync::Mutex::new(()),
        })
    }

    fn file_of(&self, app: &str, name: &str) -> PathBuf {
        // Names are restricted to [A-Za-z0-9_.-] by the config, so they are safe here.
        self.root.join(app).join(format!("{name}.json"))
    }
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

#[async_trait]
impl TokenStore for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn load_all(&self) -> Result<Vec<StoredToken>, Error> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || load_dir(&root))
            .await
            .map_err(|e| Error::Task(e.to_string()))?
    }

    async fn load(&self, key: &CredentialKey) -> Result<Option<StoredToken>, Error> {
        let path = self.file_of(&key.app, &key.name);
        tokio::task::spawn_blocking(move || read_token(&path))
            .await
            .map_err(|e| Error::Task(e.to_string()))?
    }

    async fn save(&self, token: &StoredToken) -> Result<SaveOutcome, Error> {
        let _write = self.writes.lock().await;
        let path = self.file_of(&token.app, &token.name);
        let token = token.clone();
        tokio::task::spawn_blocking(move || {
            if read_token(&path)?.is_some_and(|stored| stored.version >= token.version) {
                return Ok(SaveOutcome::Outdated);
            }
            write_atomically(&path, &token).map(|()| SaveOutcome::Saved)
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?
    }
}

fn load_dir(root: &Path) -> Result<Vec<StoredToken>, Error> {
    let mut tokens = Vec::new();
    for app_dir in std::fs::read_dir(root).map_err(|e| io(root, e))? {
        let app_dir = app_dir.map_err(|e| io(root, e))?.path();
        if !app_dir.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(&app_dir).map_err(|e| io(&app_dir, e))? {
            let path = entry.map_err(|e| io(&app_dir, e))?.path();
            if path.extension().is_none_or(|ext| ext != "json") {
                continue; // temporary files of an interrupted write
            }
            match std::fs::read(&path).map(|bytes| serde_json::from_slice::<StoredToken>(&bytes)) {
                Ok(Ok(token)) => tokens.push(token),
                Ok(Err(e)) => {
                    tracing::warn!(file = %path.display(), error = %e, "skipping unreadable token file")
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "skipping unreadable token file")
                }
            }
        }
    }
    Ok(tokens)
}

/// Reads one token file; a missing or unreadable file is no token (logged).
fn read_token(path: &Path) -> Result<Option<StoredToken>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(token) => Ok(Some(token)),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "ignoring unreadable token file");
                Ok(None)
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path, e)),
    }
}

fn write_atomically(path: &Path, token: &StoredToken) -> Result<(), Error> {
    let dir = path
        .parent()
        .expect("token files always live in an app folder");
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let bytes = serde_json::to_vec(token).expect("a StoredToken always serialises");
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(|e| io(dir, e))?;
    file.write_all(&bytes).map_err(|e| io(path, e))?;
    file.as_file().sync_all().map_err(|e| io(path, e))?;
    file.persist(path).map_err(|e| io(path, e.error))?;
    // The rename is durable only once the folder entry is on disk.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))?;
    Ok(())
}
