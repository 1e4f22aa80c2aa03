//! The cache directory: immutable entries, published atomically, restored
//! with verification, evicted least-recently-used first.
//!
//! Layout (all directories 0700, owned by the user):
//! ```text
//! <root>/LAYOUT           "ferrolab-build-cache 1"
//! <root>/entries/<key>/   one published entry: manifest.json, inputs.txt, used, artifacts
//! <root>/tmp/             entries being written (private names)
//! <root>/trash/           entries being deleted
//! <root>/rustc/           `rustc -vV` per compiler (see rustc_id)
//! <root>/events.log       what happened (see events)
//! <root>/totals.json      compacted counts
//! <root>/lock             held (flock) by whoever prunes, clears or compacts
//! ```
//!
//! Invariants, and why two kernels building at once are safe:
//! - An entry is written completely in `tmp/`, then renamed into `entries/`.
//!   A rename onto an existing entry fails, so the first writer wins and the
//!   second discards its copy. Readers never see a partial entry.
//! - A published entry is never modified (only the mtime of its `used` file
//!   is bumped, which is what LRU eviction reads).
//! - Eviction and `clear` rename an entry into `trash/` before deleting it.
//!   A reader opens the entry directory and then every file it needs before
//!   copying anything: once open, a file stays readable after it is deleted.
//!   A file that is already gone makes the lookup a plain miss.
//! - Every restored file is copied to a private name beside its destination,
//!   checked against the size and SHA-256 in the manifest, and only then
//!   renamed into place; a mismatch (a damaged disk, an entry cut short by a
//!   crash: entries are not fsynced, the check makes that safe) removes the
//!   entry and counts as a miss. Nothing partial ever reaches the build.

use crate::digest;
use crate::events::{self, Kind, SessionStats, Totals};
use crate::invocation::Invocation;
use crate::settings::Settings;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const LAYOUT: &str = "ferrolab-build-cache 1\n";
pub(crate) const MANIFEST: &str = "manifest.json";
const USED: &str = "used";
const INPUTS: &str = "inputs.txt";
/// Staging files beside a restored artifact start with this.
const STAGING_PREFIX: &str = ".ferrolab-restore-";
/// How often a build may run an automatic prune.
const PRUNE_INTERVAL: Duration = Duration::from_secs(10);
/// Staging directories older than this belong to a build that died.
const ABANDONED: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{0}")]
    Unusable(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CacheError {
    let what = what.into();
    move |source| CacheError::Io { what, source }
}

/// One artifact of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// File name in the output directory.
    pub name: String,
    /// rustc's `emit` kind: `link`, `metadata` or `dep-info`.
    pub emit: String,
    pub size: u64,
    pub sha256: String,
    pub mode: u32,
    /// Stored with the target directory replaced by the placeholder (dep-info).
    pub normalised: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub crate_name: String,
    pub created_ms: u64,
    /// How long the compile took (what a hit saves).
    pub compile_ms: u64,
    pub files: Vec<FileRecord>,
    /// rustc's output, normalised.
    pub stdout: String,
    pub stderr: String,
    /// Environment variables the crate read at compile time (`env!`), with
    /// their normalised values (None: unset). A hit requires the same values.
    pub env_deps: Vec<(String, Option<String>)>,
    /// Total size of the files.
    pub bytes: u64,
}

/// What a successful compile left, to be stored.
pub struct CompileResult<'a> {
    pub stdout: &'a [u8],
    pub stderr: &'a [u8],
    pub compile_ms: u64,
}

/// A hit: the files are in place; replay this output.
#[derive(Debug)]
pub struct Restored {
    pub stdout: String,
    pub stderr: String,
    pub compile_ms: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Miss {
    Absent,
    /// The entry disappeared or is incomplete (evicted meanwhile).
    Vanished,
    /// The entry failed verification and was removed.
    Corrupt(String),
    /// The crate read an environment variable whose value differs now.
    EnvDiffers(String),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    Published {
        bytes: u64,
    },
    /// Another build published the same entry first.
    AlreadyThere,
    /// Not stored: bigger than the whole cache limit.
    TooBig {
        bytes: u64,
    },
}

/// A published entry, for listings and pruning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryInfo {
    pub key: String,
    pub crate_name: String,
    pub bytes: u64,
    /// Unix milliseconds of the last use (or of the store).
    pub last_used_ms: u64,
    pub hits: u64,
    #[serde(skip)]
    pub readable: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub evicted: u64,
    pub freed_bytes: u64,
    pub kept: u64,
    pub kept_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub dir: PathBuf,
    pub limit_bytes: u64,
    pub entries: u64,
    pub bytes: u64,
    pub totals: Totals,
    /// This session's activity, when a session was named.
    pub session: Option<SessionStats>,
}

/// An opened cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
    limit_bytes: u64,
}

impl Cache {
    /// Opens (creating it if needed) the cache the settings name. Refuses a
    /// directory that is not the user's own or that others may write to:
    /// what is restored from it runs as the user's code.
    pub fn open(settings: &Settings) -> Result<Cache, CacheError> {
        if let Some(problem) = &settings.problem {
            return Err(CacheError::Unusable(problem.clone()));
        }
        Cache::open_at(&settings.dir, settings.limit_bytes)
    }

    pub fn open_at(root: &Path, limit_bytes: u64) -> Result<Cache, CacheError> {
        if let Some(parent) = root.parent() {
            fs::create_dir_all(parent)
                .map_err(io(format!("cannot create {}", parent.display())))?;
        }
        private_dir(root)?;
        let cache = Cache {
            root: root.to_path_buf(),
            limit_bytes,
        };
        match fs::read_to_string(cache.root.join("LAYOUT")) {
            Ok(layout) if layout == LAYOUT => {}
            Ok(other) => {
                return Err(CacheError::Unusable(format!(
                    "{} holds a build cache of another format ({}); use another directory or delete it",
                    root.display(),
                    other.trim()
                )));
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                write_atomically(&cache.root.join("LAYOUT"), LAYOUT.as_bytes())
                    .map_err(io("cannot write the cache layout file"))?;
            }
            Err(error) => return Err(io("cannot read the cache layout file")(error)),
        }
        for sub in ["entries", "tmp", "trash", "rustc"] {
            private_dir(&cache.root.join(sub))?;
        }
        Ok(cache)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn limit_bytes(&self) -> u64 {
        self.limit_bytes
    }

    fn entries_dir(&self) -> PathBuf {
        self.root.join("entries")
    }

    pub(crate) fn entry_dir(&self, key: &str) -> PathBuf {
        self.entries_dir().join(key)
    }

    pub(crate) fn rustc_dir(&self) -> PathBuf {
        self.root.join("rustc")
    }

    pub fn events_path(&self) -> PathBuf {
        self.root.join("events.log")
    }

    fn totals_path(&self) -> PathBuf {
        self.root.join("totals.json")
    }

    pub fn record(&self, kind: Kind, key: &str, session: &str, crate_name: &str, number: u64) {
        events::record(&self.events_path(), kind, key, session, crate_name, number);
    }

    /// Restores the entry for `key` into the invocation's output directory.
    pub fn restore(
        &self,
        key: &str,
        invocation: &Invocation,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Restored, Miss> {
        let dir = match File::open(self.entry_dir(key)) {
            Ok(dir) => dir,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Err(Miss::Absent),
            Err(_) => return Err(Miss::Vanished),
        };
        let mut text = String::new();
        open_in(&dir, MANIFEST)
            .and_then(|mut file| file.read_to_string(&mut text))
            .map_err(|_| Miss::Vanished)?;
        let manifest: Manifest = match serde_json::from_str(&text) {
            Ok(manifest) => manifest,
            Err(error) => return Err(self.corrupt(key, format!("unreadable manifest: {error}"))),
        };
        if manifest.format != 1 {
            return Err(self.corrupt(key, format!("unknown entry format {}", manifest.format)));
        }
        for (name, recorded) in &manifest.env_deps {
            let now = env(name).map(|value| escape_dep_env(&invocation.normalise(&value)));
            if now != *recorded {
                return Err(Miss::EnvDiffers(name.clone()));
            }
        }
        let mut sources = Vec::new();
        for record in &manifest.files {
            if !plain_name(&record.name) {
                return Err(self.corrupt(key, format!("bad file name {:?}", record.name)));
            }
            sources.push(open_in(&dir, &record.name).map_err(|_| Miss::Vanished)?);
        }
        let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
        let cleanup = |staged: &[(PathBuf, PathBuf)]| {
            for (path, _) in staged {
                let _ = fs::remove_file(path);
            }
        };
        for (record, source) in manifest.files.iter().zip(sources) {
            let destination = invocation.out_dir.join(&record.name);
            let staging = invocation.out_dir.join(format!(
                "{STAGING_PREFIX}{}-{}",
                std::process::id(),
                record.name
            ));
            staged.push((staging.clone(), destination));
            match copy_verified(source, &staging, record, invocation) {
                Ok(()) => {}
                Err(CopyError::Mismatch(why)) => {
                    cleanup(&staged);
                    return Err(self.corrupt(key, format!("{}: {why}", record.name)));
                }
                Err(CopyError::Io) => {
                    cleanup(&staged);
                    return Err(Miss::Vanished);
                }
            }
        }
        for (staging, destination) in &staged {
            if fs::rename(staging, destination).is_err() {
                cleanup(&staged);
                return Err(Miss::Vanished);
            }
        }
        if let Ok(used) = File::options()
            .write(true)
            .open(self.entry_dir(key).join(USED))
        {
            let _ = used.set_modified(SystemTime::now());
        }
        Ok(Restored {
            stdout: invocation.localise(&manifest.stdout),
            stderr: invocation.localise(&manifest.stderr),
            compile_ms: manifest.compile_ms,
        })
    }

    /// Removes a damaged entry and says why.
    fn corrupt(&self, key: &str, why: String) -> Miss {
        self.discard(key);
        Miss::Corrupt(why)
    }

    /// Moves an entry to the trash and deletes it; false if it was gone.
    fn discard(&self, key: &str) -> bool {
        let aside = self.root.join("trash").join(format!(
            "{key}.{}.{}",
            std::process::id(),
            events::now_ms()
        ));
        if fs::rename(self.entry_dir(key), &aside).is_err() {
            return false;
        }
        let _ = fs::remove_dir_all(&aside);
        true
    }

    /// Stores a successful compile's artifacts (named by rustc's artifact
    /// notifications in `result.stderr`) under `key`.
    pub fn store(
        &self,
        key: &str,
        inputs: &str,
        invocation: &Invocation,
        result: &CompileResult,
    ) -> Result<Stored, CacheError> {
        let stderr = std::str::from_utf8(result.stderr)
            .map_err(|_| CacheError::Unusable("rustc wrote non-UTF-8 output".into()))?;
        let stdout = std::str::from_utf8(result.stdout)
            .map_err(|_| CacheError::Unusable("rustc wrote non-UTF-8 output".into()))?;
        let artifacts = artifacts(stderr, &invocation.out_dir).ok_or_else(|| {
            CacheError::Unusable("an artifact outside the output directory".into())
        })?;
        if artifacts.is_empty() {
            return Err(CacheError::Unusable("rustc reported no artifacts".into()));
        }
        let mut bytes = 0;
        for (name, _) in &artifacts {
            let path = invocation.out_dir.join(name);
            bytes += fs::metadata(&path)
                .map_err(io(format!("cannot read {}", path.display())))?
                .len();
        }
        if bytes > self.limit_bytes {
            return Ok(Stored::TooBig { bytes });
        }
        let staging = tempfile::Builder::new()
            .prefix(&format!("{key}."))
            .tempdir_in(self.root.join("tmp"))
            .map_err(io("cannot create a staging directory"))?;
        let mut files = Vec::new();
        let mut env_deps = Vec::new();
        for (name, emit) in &artifacts {
            let source = invocation.out_dir.join(name);
            let target = staging.path().join(name);
            let mode = fs::metadata(&source)
                .map_err(io(format!("cannot read {}", source.display())))?
                .mode()
                & 0o777;
            let normalised = emit == "dep-info";
            let (size, sha256) = if normalised {
                let text = fs::read_to_string(&source)
                    .map_err(io(format!("cannot read {}", source.display())))?;
                env_deps.extend(env_deps_of(&text, invocation));
                let text = invocation.normalise(&text);
                fs::write(&target, &text)
                    .map_err(io(format!("cannot write {}", target.display())))?;
                (text.len() as u64, digest::bytes(text.as_bytes()))
            } else {
                copy_hashed(&source, &target).map_err(io(format!(
                    "cannot copy {} into the cache",
                    source.display()
                )))?
            };
            fs::set_permissions(&target, fs::Permissions::from_mode(mode & 0o700 | 0o400))
                .map_err(io("cannot set permissions"))?;
            files.push(FileRecord {
                name: name.clone(),
                emit: emit.clone(),
                size,
                sha256,
                mode,
                normalised,
            });
        }
        let manifest = Manifest {
            format: 1,
            crate_name: invocation.label.clone(),
            created_ms: events::now_ms(),
            compile_ms: result.compile_ms,
            files,
            stdout: invocation.normalise(stdout),
            stderr: invocation.normalise(stderr),
            env_deps,
            bytes,
        };
        let write = |name: &str, data: &[u8]| {
            fs::write(staging.path().join(name), data).map_err(io(format!("cannot write {name}")))
        };
        write(INPUTS, inputs.as_bytes())?;
        write(
            MANIFEST,
            &serde_json::to_vec_pretty(&manifest)
                .map_err(|e| CacheError::Unusable(e.to_string()))?,
        )?;
        write(USED, b"")?;
        let staged = staging.keep();
        match fs::rename(&staged, self.entry_dir(key)) {
            Ok(()) => Ok(Stored::Published { bytes }),
            Err(error) => {
                let _ = fs::remove_dir_all(&staged);
                if self.entry_dir(key).join(MANIFEST).exists() {
                    Ok(Stored::AlreadyThere)
                } else {
                    Err(io("cannot publish the entry")(error))
                }
            }
        }
    }

    /// Every published entry, most recently used first.
    pub fn entries(&self) -> Vec<EntryInfo> {
        self.list_entries(events::hits_by_key(&self.events_path()))
    }

    fn list_entries(&self, hits: std::collections::HashMap<String, u64>) -> Vec<EntryInfo> {
        let Ok(listing) = fs::read_dir(self.entries_dir()) else {
            return Vec::new();
        };
        let mut entries = Vec::new();
        for item in listing.flatten() {
            let path = item.path();
            let Some(key) = item.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let manifest: Option<Manifest> = fs::read(path.join(MANIFEST))
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok());
            let last_used = fs::metadata(path.join(USED))
                .or_else(|_| fs::metadata(&path))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as u64);
            let (crate_name, bytes, readable) = match &manifest {
                Some(manifest) => (manifest.crate_name.clone(), manifest.bytes, true),
                None => ("?".to_owned(), dir_size(&path), false),
            };
            entries.push(EntryInfo {
                hits: hits.get(&key).copied().unwrap_or(0),
                key,
                crate_name,
                bytes,
                last_used_ms: last_used,
                readable,
            });
        }
        entries.sort_by_key(|entry| std::cmp::Reverse(entry.last_used_ms));
        entries
    }

    pub fn stats(&self, session: Option<&str>) -> Stats {
        let entries = self.entries();
        Stats {
            dir: self.root.clone(),
            limit_bytes: self.limit_bytes,
            entries: entries.len() as u64,
            bytes: entries.iter().map(|e| e.bytes).sum(),
            totals: events::totals(&self.events_path(), &self.totals_path()),
            session: session.map(|tag| events::session(&self.events_path(), tag)),
        }
    }

    /// Evicts least-recently-used entries until the cache holds at most
    /// `limit_bytes`; also removes staging left by dead builds and compacts
    /// the event log. Returns `None` when another process is pruning.
    pub fn prune(&self, limit_bytes: u64) -> Option<PruneReport> {
        let _lock = self.lock()?;
        self.sweep_leftovers();
        let aside = self
            .root
            .join("trash")
            .join(format!("events.{}", std::process::id()));
        let _ = events::compact(&self.events_path(), &self.totals_path(), &aside);
        let mut entries = self.list_entries(Default::default());
        // Unreadable entries (damaged, or not entries at all) first, then
        // the least recently used.
        entries.sort_by_key(|e| (e.readable, e.last_used_ms));
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        let mut report = PruneReport::default();
        let mut kept = Vec::new();
        for entry in entries {
            if total > limit_bytes || !entry.readable {
                if self.discard(&entry.key) {
                    self.record(Kind::Evict, &entry.key, "-", &entry.crate_name, entry.bytes);
                    report.evicted += 1;
                    report.freed_bytes += entry.bytes;
                }
                total = total.saturating_sub(entry.bytes);
            } else {
                kept.push(entry);
            }
        }
        report.kept = kept.len() as u64;
        report.kept_bytes = kept.iter().map(|e| e.bytes).sum();
        Some(report)
    }

    /// A prune at most every few seconds, after a store.
    pub fn maybe_prune(&self) {
        let stamp = self.root.join("pruned");
        let recent = fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < PRUNE_INTERVAL);
        if recent {
            return;
        }
        let touched = File::create(&stamp).and_then(|f| f.set_modified(SystemTime::now()));
        if touched.is_ok() {
            self.prune(self.limit_bytes);
        }
    }

    /// Deletes every entry and the statistics.
    pub fn clear(&self) -> Result<u64, CacheError> {
        let _lock = self.lock();
        let count = fs::read_dir(self.entries_dir()).map_or(0, |l| l.count() as u64);
        let aside = self.root.join("trash").join(format!(
            "entries.{}.{}",
            std::process::id(),
            events::now_ms()
        ));
        fs::rename(self.entries_dir(), &aside).map_err(io("cannot clear the cache"))?;
        private_dir(&self.entries_dir())?;
        let _ = fs::remove_dir_all(&aside);
        let _ = fs::remove_file(self.events_path());
        let _ = fs::remove_file(self.totals_path());
        Ok(count)
    }

    /// Re-hashes every entry; returns the problems found (nothing is changed).
    pub fn verify(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        for entry in self.entries() {
            let dir = self.entry_dir(&entry.key);
            let manifest: Manifest = match fs::read(dir.join(MANIFEST))
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(manifest) => manifest,
                Err(error) => {
                    problems.push((entry.key, format!("manifest: {error}")));
                    continue;
                }
            };
            for record in &manifest.files {
                let path = dir.join(&record.name);
                match (fs::metadata(&path), digest::file(&path)) {
                    (Ok(meta), Ok(sha)) if meta.len() == record.size && sha == record.sha256 => {}
                    (Ok(_), Ok(_)) => problems.push((
                        entry.key.clone(),
                        format!("{}: contents differ from the manifest", record.name),
                    )),
                    (Err(error), _) | (_, Err(error)) => {
                        problems.push((entry.key.clone(), format!("{}: {error}", record.name)))
                    }
                }
            }
        }
        problems
    }

    fn sweep_leftovers(&self) {
        if let Ok(listing) = fs::read_dir(self.root.join("tmp")) {
            for item in listing.flatten() {
                let old = item
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > ABANDONED);
                if old {
                    let _ = fs::remove_dir_all(item.path());
                }
            }
        }
        if let Ok(listing) = fs::read_dir(self.root.join("trash")) {
            for item in listing.flatten() {
                let _ = fs::remove_dir_all(item.path()).or_else(|_| fs::remove_file(item.path()));
            }
        }
    }

    /// The maintenance lock (non-blocking). Filesystems without locks
    /// (some network mounts) run maintenance unlocked: every step is safe
    /// to repeat.
    fn lock(&self) -> Option<File> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join("lock"))
            .ok()?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Some(file),
            Err(rustix::io::Errno::WOULDBLOCK) => None,
            Err(_) => Some(file),
        }
    }
}

/// Creates `dir` (0700) or checks the one there: a directory (through
/// symlinks) owned by this user that nobody else may write to.
pub(crate) fn private_dir(dir: &Path) -> Result<(), CacheError> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(io(format!("cannot create {}", dir.display()))(error)),
    }
    let meta = fs::metadata(dir).map_err(io(format!("cannot read {}", dir.display())))?;
    let uid = rustix::process::getuid().as_raw();
    if !meta.is_dir() {
        return Err(CacheError::Unusable(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    if meta.uid() != uid || meta.mode() & 0o022 != 0 {
        return Err(CacheError::Unusable(format!(
            "{} belongs to another user or others may write to it; the build cache only uses a directory that is yours alone (its contents run as your code)",
            dir.display()
        )));
    }
    Ok(())
}

pub(crate) fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let staged = path.with_extension(format!("new{}", std::process::id()));
    fs::write(&staged, data)?;
    fs::rename(&staged, path)
}

fn open_in(dir: &File, name: &str) -> std::io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    Ok(File::from(fd))
}

fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0')
        && !name.starts_with(STAGING_PREFIX)
        && ![MANIFEST, USED, INPUTS].contains(&name)
}

enum CopyError {
    Mismatch(String),
    /// The file could not be read or the copy written: not the entry's fault.
    Io,
}

/// Copies one stored file to `staging`, checking size and hash.
fn copy_verified(
    mut source: File,
    staging: &Path,
    record: &FileRecord,
    invocation: &Invocation,
) -> Result<(), CopyError> {
    let mut out = File::options()
        .write(true)
        .create_new(true)
        .open(staging)
        .map_err(|_| CopyError::Io)?;
    let (size, sha) = if record.normalised {
        let mut text = String::new();
        source
            .read_to_string(&mut text)
            .map_err(|_| CopyError::Mismatch("not text".into()))?;
        out.write_all(invocation.localise(&text).as_bytes())
            .map_err(|_| CopyError::Io)?;
        (text.len() as u64, digest::bytes(text.as_bytes()))
    } else {
        copy_stream(&mut source, &mut out).map_err(|_| CopyError::Io)?
    };
    if size != record.size || sha != record.sha256 {
        return Err(CopyError::Mismatch(format!(
            "{size} bytes with hash {sha}, the manifest says {} bytes with {}",
            record.size, record.sha256
        )));
    }
    fs::set_permissions(staging, fs::Permissions::from_mode(record.mode & 0o777))
        .map_err(|_| CopyError::Io)?;
    Ok(())
}

fn copy_hashed(source: &Path, target: &Path) -> std::io::Result<(u64, String)> {
    let mut input = File::open(source)?;
    let mut output = File::options().write(true).create_new(true).open(target)?;
    copy_stream(&mut input, &mut output)
}

fn copy_stream(input: &mut File, output: &mut File) -> std::io::Result<(u64, String)> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let read = input.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        output.write_all(&buffer[..read])?;
        size += read as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir).map_or(0, |listing| {
        listing
            .flatten()
            .filter_map(|item| item.metadata().ok())
            .map(|meta| meta.len())
            .sum()
    })
}

/// `(file name, emit kind)` of each artifact rustc announced, or `None` when
/// one lies outside `out_dir`.
pub fn artifacts(stderr: &str, out_dir: &Path) -> Option<Vec<(String, String)>> {
    let mut found: Vec<(String, String)> = Vec::new();
    for line in stderr.lines() {
        if !line.starts_with('{') || !line.contains("\"artifact\"") {
            continue;
        }
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(path), Some(emit)) = (value["artifact"].as_str(), value["emit"].as_str()) else {
            continue;
        };
        let path = Path::new(path);
        if path.parent() != Some(out_dir) {
            return None;
        }
        let name = path.file_name()?.to_str()?.to_owned();
        if !plain_name(&name) {
            return None;
        }
        if !found.iter().any(|(known, _)| *known == name) {
            found.push((name, emit.to_owned()));
        }
    }
    Some(found)
}

/// `# env-dep:NAME=value` lines of a dep-info file (values normalised).
fn env_deps_of(dep_info: &str, invocation: &Invocation) -> Vec<(String, Option<String>)> {
    dep_info
        .lines()
        .filter_map(|line| line.strip_prefix("# env-dep:"))
        .map(|dep| match dep.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(invocation.normalise(value))),
            None => (dep.to_owned(), None),
        })
        .collect()
}

/// How rustc writes an environment value into dep-info.
fn escape_dep_env(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\n' => escaped.push_str(r"\n"),
            '\r' => escaped.push_str(r"\r"),
            '\\' => escaped.push_str(r"\\"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_cache_is_private_and_one_others_may_write_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("fresh");
        Cache::open_at(&root, 1 << 20).unwrap();
        for dir in [root.clone(), root.join("entries"), root.join("tmp")] {
            let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }

        let shared = base.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
        let Err(refused) = Cache::open_at(&shared, 1 << 20) else {
            panic!("a directory others may write to was opened as a cache");
        };
        assert!(
            refused.to_string().contains("others may write"),
            "{refused}"
        );
        // Nothing was put there.
        assert_eq!(fs::read_dir(&shared).unwrap().count(), 0);

        // Also an inner directory someone loosened.
        fs::set_permissions(root.join("entries"), fs::Permissions::from_mode(0o757)).unwrap();
        assert!(Cache::open_at(&root, 1 << 20).is_err());
    }
}
