//! `backend = "embedded"`: one small JSON file per token under `store.path/tokens`,
//! and one per app under `store.path/quota` with today's call counts.
//!
//! Each write goes to a temporary file in the same folder, is fsynced, then renamed
//! over the old file, and the folder is fsynced: after a crash at any point the file
//! holds either the old or the new token, never a torn one. A folder created for a new
//! app is made durable in its parent the same way.
//!
//! Writes of different files run in parallel: each file's read-compare-write is
//! serialised by one of [`STRIPES`] locks chosen by the file's path, not by one lock for
//! the whole store. A first start with 10,000 apps saves 20,000 tokens, each behind a
//! few fsyncs of a few milliseconds; one at a time that is minutes, while the disk
//! completes many fsyncs at once in little more time than one.
//!
//! One process per folder: the store holds an exclusive lock on `store.path/.lock` for
//! its whole life, so a second server started on the same folder (whose saves would
//! race this one's, and whose refreshes would replace this one's tokens at WeChat)
//! refuses to start. The lock is the operating system's (`flock` on Unix), so it goes
//! with the process, even after `kill -9`: there is no stale lock file to clean up.
//!
//! Files are created readable by their owner only (0600): they hold live tokens.
//!
//! Apps of the runtime registry live in `store.path/apps/NAME.json`, written the same
//! atomic way (their secrets sealed when `store.encryption_key` is set).
//!
//! A token's pending mark (see [`TokenStore::mark_pending`]) lives beside it in
//! `NAME.pending`: 16 bytes overwritten in place and fsynced. In place, because the
//! mark must be writable when the disk is full (no new block is needed once the file
//! exists): a full disk must not hide that a call is out.

use std::fs::{File, TryLockError};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Error, QuotaCounts, SaveOutcome, StoredApp, StoredToken, TokenStore};
use crate::domain::CredentialKey;

pub struct EmbeddedStore {
    root: PathBuf,
    quota_root: PathBuf,
    apps_root: PathBuf,
    /// Serialise the read-modify-write of each file within this process: a token file
    /// with its pending mark, or an app's quota file. The embedded store serves one
    /// instance (the folder lock sees to it); clusters share a Redis store instead.
    file_locks: Arc<FileLocks>,
    /// `store.path/.lock`, locked exclusively: no other store (in this process or
    /// another) uses the folder while this one is open. Closing the file on drop
    /// releases the lock.
    _folder_lock: File,
}

/// The lock file's name, in `store.path`.
const LOCK_FILE: &str = ".lock";

/// How many locks the files are spread over: well above the calls in flight at once
/// (`refresh.max_concurrent_calls`, 32 by default), so that two saves rarely share one.
pub const STRIPES: usize = 256;

/// Striped locks: a file's lock is chosen by the hash of its path, so a file always
/// gets the same lock and two files usually get different ones.
struct FileLocks([Mutex<()>; STRIPES]);

impl FileLocks {
    fn new() -> Self {
        Self(std::array::from_fn(|_| Mutex::new(())))
    }

    /// Locks `path` (and every path sharing its stripe) until the guard is dropped.
    fn lock(&self, path: &Path) -> MutexGuard<'_, ()> {
        // A panic while locked leaves no half-written file (writes are atomic renames).
        self.0[stripe_of(path)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// The stripe of `path`: SipHash with fixed keys, so the same one for the store's life.
fn stripe_of(path: &Path) -> usize {
    let mut hasher = std::hash::DefaultHasher::new();
    path.hash(&mut hasher);
    usize::try_from(hasher.finish() % STRIPES as u64).unwrap_or(0)
}

/// The content of `quota/<app>.json`: the counts of one WeChat day.
#[derive(Debug, Default, Serialize, Deserialize)]
struct QuotaFile {
    day: u64,
    calls: QuotaCounts,
}

impl EmbeddedStore {
    /// Opens (creating it if needed) the store folder, and locks it for as long as the
    /// store lives.
    ///
    /// # Errors
    /// [`Error::Locked`] when another store, in this process or another, has the folder
    /// open; [`Error::Io`] when the folder cannot be created or written.
    pub fn open(path: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(path).map_err(|source| io(path, source))?;
        let folder_lock = lock_folder(path)?;
        let root = path.join("tokens");
        std::fs::create_dir_all(&root).map_err(|source| io(&root, source))?;
        // Fail now, not at the first refresh, when the folder is not writable.
        probe(&root)?;
        let quota_root = path.join("quota");
        std::fs::create_dir_all(&quota_root).map_err(|source| io(&quota_root, source))?;
        let apps_root = path.join("apps");
        std::fs::create_dir_all(&apps_root).map_err(|source| io(&apps_root, source))?;
        Ok(Self {
            root,
            quota_root,
            apps_root,
            file_locks: Arc::new(FileLocks::new()),
            _folder_lock: folder_lock,
        })
    }

    fn quota_file_of(&self, app: &str) -> PathBuf {
        self.quota_root.join(format!("{app}.json"))
    }

    fn app_file_of(&self, name: &str) -> PathBuf {
        // App names are checked by `domain::is_valid_name`: no '/', no leading '.'.
        self.apps_root.join(format!("{name}.json"))
    }

    fn file_of(&self, app: &str, name: &str) -> PathBuf {
        // Names are restricted to [A-Za-z0-9_.-] by the config, so they are safe here.
        self.root.join(app).join(format!("{name}.json"))
    }
}

impl EmbeddedStore {
    /// A save: over any older version (`expected` None), or over exactly `expected`.
    async fn store(
        &self,
        token: &StoredToken,
        expected: Option<u64>,
    ) -> Result<SaveOutcome, Error> {
        let path = self.file_of(&token.app, &token.name);
        let mut token = token.clone();
        token.pending_since_ms = None;
        let bytes = serde_json::to_vec(&token).expect("a StoredToken always serialises");
        let (version, locks) = (token.version, self.file_locks.clone());
        blocking(move || {
            let _guard = locks.lock(&path);
            let current = read_token(&path)?.map_or(0, |stored| stored.version);
            if current >= version || expected.is_some_and(|e| e != current) {
                return Ok(SaveOutcome::Outdated);
            }
            write_atomically(&path, &bytes)?;
            // Only once the new token is durable may the mark go: a crash in between
            // leaves a mark on the new token, which only makes it refreshed early.
            // Written even when there was none, so that the file exists (and can be
            // overwritten in place) before the disk fills up.
            write_mark(&mark_file_of(&path), None)?;
            Ok(SaveOutcome::Saved)
        })
        .await
    }
}

/// Creates `dir` (an app's folder under `tokens/`) if it is missing, and then fsyncs its
/// parent: the new folder's entry must be on disk before a file in it counts as saved.
/// Two saves may race to create it; both fsync, which is harmless.
fn create_dir_durably(dir: &Path) -> Result<(), Error> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(parent, e))?;
    }
    Ok(())
}

/// Takes the exclusive lock on `folder`'s lock file, without waiting.
fn lock_folder(folder: &Path) -> Result<File, Error> {
    let path = folder.join(LOCK_FILE);
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(&path).map_err(|source| io(&path, source))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Error::Locked {
            path: folder.display().to_string(),
        }),
        Err(TryLockError::Error(source)) => Err(io(&path, source)),
    }
}

/// A new temporary file in `dir`, readable and writable by its owner only (tempfile's
/// default too, made explicit here because these files hold live tokens).
fn private_temp_file(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600));
    builder.tempfile_in(dir)
}

/// The pending mark of the token stored at `token_file`.
fn mark_file_of(token_file: &Path) -> PathBuf {
    token_file.with_extension("pending")
}

/// Scrambles the mark's check word, so that a zeroed or torn file never reads as a
/// valid mark of 0.
const MARK_CHECK: u64 = 0x5754_5350_454e_4447;

/// Reads a pending mark: `None` when there is none (or no file); a file that does not
/// check out counts as a mark of the Unix epoch, which distrusts the stored token.
fn read_mark(path: &Path) -> Option<u64> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(_) => return None,
    };
    let word = |at: usize| {
        bytes
            .get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    match (word(0), word(8)) {
        (Some(0), Some(0)) => None,
        (Some(since), Some(check)) if since ^ MARK_CHECK == check => Some(since),
        _ => {
            tracing::warn!(file = %path.display(), "unreadable pending mark: the stored token is not trusted");
            Some(0)
        }
    }
}

/// Overwrites a pending mark in place (`None` clears it) and fsyncs it.
fn write_mark(path: &Path, since: Option<u64>) -> Result<(), Error> {
    use std::os::unix::fs::FileExt;
    let mut bytes = [0u8; 16];
    if let Some(since) = since {
        bytes[..8].copy_from_slice(&since.to_le_bytes());
        bytes[8..].copy_from_slice(&(since ^ MARK_CHECK).to_le_bytes());
    }
    let existed = path.exists();
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path).map_err(|e| io(path, e))?;
    file.write_all_at(&bytes, 0).map_err(|e| io(path, e))?;
    file.sync_data().map_err(|e| io(path, e))?;
    if !existed && let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(dir, e))?;
    }
    Ok(())
}

/// Creates and removes a file in `dir`: proves that the folder is writable.
fn probe(dir: &Path) -> Result<(), Error> {
    let file = private_temp_file(dir).map_err(|source| io(dir, source))?;
    drop(file);
    Ok(())
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
        blocking(move || load_dir(&root)).await
    }

    async fn load(&self, key: &CredentialKey) -> Result<Option<StoredToken>, Error> {
        let path = self.file_of(&key.app, &key.name);
        blocking(move || read_token(&path)).await
    }

    async fn save(&self, token: &StoredToken) -> Result<SaveOutcome, Error> {
        self.store(token, None).await
    }

    async fn save_over(&self, token: &StoredToken, expected: u64) -> Result<SaveOutcome, Error> {
        self.store(token, Some(expected)).await
    }

    async fn mark_pending(&self, key: &CredentialKey, since_ms: u64) -> Result<(), Error> {
        let path = self.file_of(&key.app, &key.name);
        let locks = self.file_locks.clone();
        blocking(move || {
            let _guard = locks.lock(&path);
            let mark = mark_file_of(&path);
            if read_mark(&mark).is_some() {
                return Ok(()); // an earlier call is still unaccounted for
            }
            match std::fs::metadata(&path) {
                Ok(_) => write_mark(&mark, Some(since_ms)),
                // No stored token to protect.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                // A folder that cannot be read cannot be trusted to hold the mark.
                Err(e) => Err(io(&path, e)),
            }
        })
        .await
    }

    async fn clear_pending(&self, key: &CredentialKey, since_ms: u64) -> Result<(), Error> {
        let token_file = self.file_of(&key.app, &key.name);
        let locks = self.file_locks.clone();
        blocking(move || {
            // The token file's lock: its save clears the mark too.
            let _guard = locks.lock(&token_file);
            let path = mark_file_of(&token_file);
            if read_mark(&path) == Some(since_ms) {
                write_mark(&path, None)?;
            }
            Ok(())
        })
        .await
    }

    async fn delete(&self, key: &CredentialKey) -> Result<(), Error> {
        let path = self.file_of(&key.app, &key.name);
        let locks = self.file_locks.clone();
        blocking(move || {
            let _guard = locks.lock(&path);
            remove_durably(&path)?;
            remove_durably(&mark_file_of(&path))?;
            if let Some(dir) = path.parent() {
                // The app's folder goes once empty; not empty is no error.
                let _ = std::fs::remove_dir(dir);
            }
            Ok(())
        })
        .await
    }

    async fn load_apps(&self) -> Result<Vec<StoredApp>, Error> {
        let root = self.apps_root.clone();
        blocking(move || load_apps_dir(&root)).await
    }

    async fn save_app(&self, app: &StoredApp) -> Result<(), Error> {
        let path = self.app_file_of(&app.name);
        let bytes = app.record.clone().into_bytes();
        blocking(move || write_atomically(&path, &bytes)).await
    }

    async fn delete_app(&self, name: &str) -> Result<bool, Error> {
        let path = self.app_file_of(name);
        blocking(move || remove_durably(&path)).await
    }

    async fn add_quota_use(&self, app: &str, endpoint: &str, day: u64) -> Result<u64, Error> {
        let path = self.quota_file_of(app);
        let endpoint = endpoint.to_owned();
        let locks = self.file_locks.clone();
        blocking(move || {
            let _guard = locks.lock(&path);
            let mut file = read_quota(&path, day);
            let calls = file.calls.entry(endpoint).or_insert(0);
            *calls += 1;
            let calls = *calls;
            let bytes = serde_json::to_vec(&file).expect("quota counts always serialise");
            write_atomically(&path, &bytes)?;
            Ok(calls)
        })
        .await
    }

    async fn load_quota(&self, app: &str, day: u64) -> Result<QuotaCounts, Error> {
        let path = self.quota_file_of(app);
        blocking(move || Ok(read_quota(&path, day).calls)).await
    }

    async fn load_quotas(&self, apps: &[&str], day: u64) -> Result<Vec<QuotaCounts>, Error> {
        let paths: Vec<PathBuf> = apps.iter().map(|app| self.quota_file_of(app)).collect();
        blocking(move || Ok(in_parallel(&paths, |path| read_quota(path, day).calls))).await
    }

    async fn ping(&self) -> Result<(), Error> {
        let root = self.root.clone();
        blocking(move || probe(&root)).await
    }
}

/// Runs blocking file I/O off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

/// The counts of `day` in a quota file: empty when the file is missing, unreadable
/// (a count that restarts from zero is better than a server that stops) or of another day.
fn read_quota(path: &Path, day: u64) -> QuotaFile {
    let fresh = QuotaFile {
        day,
        calls: QuotaCounts::new(),
    };
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<QuotaFile>(&bytes) {
            Ok(file) if file.day == day => file,
            Ok(_) => fresh,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "ignoring unreadable quota file");
                fresh
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fresh,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "ignoring unreadable quota file");
            fresh
        }
    }
}

/// Every token under `root`. The app folders are read on a few threads at once: a
/// restart with 20,000 tokens opens 40,000 files (each token and its mark), which one
/// thread takes most of a second to do.
fn load_dir(root: &Path) -> Result<Vec<StoredToken>, Error> {
    let mut app_dirs = Vec::new();
    for app_dir in std::fs::read_dir(root).map_err(|e| io(root, e))? {
        let app_dir = app_dir.map_err(|e| io(root, e))?.path();
        if app_dir.is_dir() {
            app_dirs.push(app_dir);
        }
    }
    let per_app = in_parallel(&app_dirs, |dir| load_app_dir(dir));
    let mut tokens = Vec::with_capacity(per_app.len() * 2);
    for app in per_app {
        tokens.extend(app?);
    }
    Ok(tokens)
}

/// The tokens in one app's folder.
fn load_app_dir(app_dir: &Path) -> Result<Vec<StoredToken>, Error> {
    let mut tokens = Vec::new();
    for entry in std::fs::read_dir(app_dir).map_err(|e| io(app_dir, e))? {
        let path = entry.map_err(|e| io(app_dir, e))?.path();
        if path.extension().is_none_or(|ext| ext != "json") {
            continue; // marks, and temporary files of an interrupted write
        }
        match std::fs::read(&path).map(|bytes| serde_json::from_slice::<StoredToken>(&bytes)) {
            Ok(Ok(mut token)) => {
                token.pending_since_ms = read_mark(&mark_file_of(&path));
                tokens.push(token);
            }
            Ok(Err(e)) => {
                tracing::warn!(file = %path.display(), error = %e, "skipping unreadable token file")
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "skipping unreadable token file")
            }
        }
    }
    Ok(tokens)
}

/// Every `NAME.json` in the apps folder; unreadable files are skipped with a warning.
fn load_apps_dir(root: &Path) -> Result<Vec<StoredApp>, Error> {
    let mut apps = Vec::new();
    for entry in std::fs::read_dir(root).map_err(|e| io(root, e))? {
        let path = entry.map_err(|e| io(root, e))?.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue; // temporary files of an interrupted write
        };
        match std::fs::read_to_string(&path) {
            Ok(record) => apps.push(StoredApp {
                name: name.to_owned(),
                record,
            }),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "skipping unreadable app file")
            }
        }
    }
    Ok(apps)
}

/// Removes a file and makes the removal durable; true if it existed.
fn remove_durably(path: &Path) -> Result<bool, Error> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io(path, e)),
    }
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(dir, e))?;
    }
    Ok(true)
}

/// Most threads [`in_parallel`] uses: file reads wait on the kernel more than on a
/// core, so a few more than the cores help, and many more only contend.
const READ_THREADS: usize = 8;

/// `read` of every item, in order, spread over a few scoped threads.
fn in_parallel<T: Sync, R: Send>(items: &[T], read: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get() * 2)
        .min(READ_THREADS);
    let chunk = items.len().div_ceil(threads).max(64);
    if items.len() <= chunk {
        return items.iter().map(&read).collect();
    }
    let read = &read;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(read).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// Reads one token file; a missing or unreadable file is no token (logged).
fn read_token(path: &Path) -> Result<Option<StoredToken>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<StoredToken>(&bytes) {
            Ok(mut token) => {
                token.pending_since_ms = read_mark(&mark_file_of(path));
                Ok(Some(token))
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "ignoring unreadable token file");
                Ok(None)
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path, e)),
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path
        .parent()
        .expect("store files always live in a folder of the store");
    create_dir_durably(dir)?;
    let mut file = private_temp_file(dir).map_err(|e| io(dir, e))?;
    file.write_all(bytes).map_err(|e| io(path, e))?;
    file.as_file().sync_all().map_err(|e| io(path, e))?;
    file.persist(path).map_err(|e| io(path, e.error))?;
    // The rename is durable only once the folder entry is on disk.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_store_on_the_same_folder_is_refused_until_the_first_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let first = EmbeddedStore::open(dir.path()).unwrap();
        let Err(e) = EmbeddedStore::open(dir.path()) else {
            panic!("a second store opened the folder of a live one");
        };
        assert!(matches!(e, Error::Locked { .. }), "{e:?}");
        let message = e.to_string();
        assert!(
            message.contains(&dir.path().display().to_string())
                && message.contains("another process"),
            "{message}"
        );
        drop(first);
        EmbeddedStore::open(dir.path()).expect("the lock went with the first store");
    }

    fn token(app: &str, version: u64) -> StoredToken {
        StoredToken {
            app: app.into(),
            name: "access_token".into(),
            value: format!("T{version}"),
            expires_at_ms: 2,
            refreshed_at_ms: 1,
            version,
            pending_since_ms: None,
            announced: true,
            generation: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_save_waits_only_for_saves_of_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let path_a = store.file_of("a", "access_token");
        let other = (0..1000)
            .map(|i| format!("b{i}"))
            .find(|app| stripe_of(&store.file_of(app, "access_token")) != stripe_of(&path_a))
            .expect("some app on another stripe");
        // Another save of `a` is under way: a thread holds its lock until told.
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = {
            let store = store.clone();
            std::thread::spawn(move || {
                let _guard = store.file_locks.lock(&path_a);
                locked_tx.send(()).unwrap();
                let _ = release_rx.recv();
            })
        };
        locked_rx.recv().unwrap();
        let same = {
            let store = store.clone();
            tokio::spawn(async move { store.save(&token("a", 1)).await })
        };
        let elsewhere = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            store.save(&token(&other, 1)),
        )
        .await;
        assert!(
            matches!(elsewhere, Ok(Ok(SaveOutcome::Saved))),
            "{elsewhere:?}"
        );
        assert!(
            !same.is_finished(),
            "a save of the same file went past its lock"
        );
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        assert!(matches!(same.await, Ok(Ok(SaveOutcome::Saved))));
        // And its read-compare-write still refuses what is not newer.
        let again = store.save(&token("a", 1)).await.unwrap();
        assert_eq!(again, SaveOutcome::Outdated);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn token_quota_and_lock_files_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let token = StoredToken {
            app: "default".into(),
            name: "access_token".into(),
            value: "T".into(),
            expires_at_ms: 2,
            refreshed_at_ms: 1,
            version: 1,
            pending_since_ms: None,
            announced: true,
            generation: None,
        };
        store.save(&token).await.unwrap();
        store.mark_pending(&token.key(), 1).await.unwrap();
        store
            .add_quota_use("default", "/cgi-bin/token", 1)
            .await
            .unwrap();
        for file in [
            "tokens/default/access_token.json",
            "tokens/default/access_token.pending",
            "quota/default.json",
            LOCK_FILE,
        ] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}: {mode:o}");
        }
    }
}
