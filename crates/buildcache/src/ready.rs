//! Ready marks: a name for "everything one build needs is in the cache".
//!
//! A build that fills the cache ahead of time (ferrolab warming its own
//! runtime) records, under a name of its choosing, the entries its session
//! looked up: the keys of its hits and misses in the statistics log. The
//! mark holds while every one of those entries is still in the cache, so
//! eviction, `clear` or a damaged entry removed on restore make it stop
//! holding, with nothing to clean up. Marks are written atomically; a
//! builder holds the mark's lock (`ready/NAME.lock`) while it builds, so
//! two of them do not compile the same crates at once.

use crate::events::{self, Kind};
use crate::store::{Cache, CacheError, MANIFEST, private_dir, write_atomically};
use std::collections::BTreeSet;
use std::fs::File;
use std::path::PathBuf;

/// How long a builder that does not wait keeps trying for the lock: far
/// longer than a probe holds it, far shorter than a build.
const PROBE_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// A name usable as a file name: letters, digits, `-`, `_`, `.` (not first).
fn valid(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The lock a builder holds; released when the file is dropped (or the
/// process ends, however it ends).
#[derive(Debug)]
pub struct BuildLock {
    _file: File,
}

impl Cache {
    fn ready_dir(&self) -> Result<PathBuf, CacheError> {
        let dir = self.root().join("ready");
        private_dir(&dir)?;
        Ok(dir)
    }

    fn mark_path(&self, name: &str) -> Result<PathBuf, CacheError> {
        if !valid(name) {
            return Err(CacheError::Unusable(format!(
                "`{name}` is not a ready mark's name"
            )));
        }
        Ok(self.ready_dir()?.join(name))
    }

    /// Records that the build `session` (its tag in the statistics) made the
    /// cache ready for `name`: every entry it looked up is there now.
    /// Returns how many entries the mark names; refuses (writing nothing)
    /// when the session looked nothing up or an entry is missing, e.g. one
    /// too big to store.
    pub fn mark_ready(&self, name: &str, session: &str) -> Result<usize, CacheError> {
        let path = self.mark_path(name)?;
        let keys: BTreeSet<String> = events::read(&self.events_path())
            .into_iter()
            .filter(|e| e.session == session && matches!(e.kind, Kind::Hit | Kind::Miss))
            .map(|e| e.key)
            .collect();
        if keys.is_empty() {
            return Err(CacheError::Unusable(format!(
                "the build {session} looked nothing up in the cache"
            )));
        }
        if let Some(missing) = keys.iter().find(|key| !self.holds(key)) {
            return Err(CacheError::Unusable(format!(
                "the entry {missing} of build {session} is not in the cache"
            )));
        }
        let text: String = keys.iter().map(|key| format!("{key}\n")).collect();
        write_atomically(&path, text.as_bytes()).map_err(|source| CacheError::Io {
            what: format!("cannot write {}", path.display()),
            source,
        })?;
        Ok(keys.len())
    }

    /// Whether the mark `name` was written and every entry it names is
    /// still in the cache.
    pub fn is_ready(&self, name: &str) -> bool {
        let Ok(path) = self.mark_path(name) else {
            return false;
        };
        let Ok(text) = std::fs::read_to_string(path) else {
            return false;
        };
        let mut keys = text.lines().peekable();
        keys.peek().is_some() && keys.all(|key| self.holds(key))
    }

    /// Whether a published entry for `key` is in the cache.
    pub fn holds(&self, key: &str) -> bool {
        !key.is_empty()
            && key.chars().all(|c| c.is_ascii_hexdigit())
            && self.entry_dir(key).join(MANIFEST).is_file()
    }

    /// The lock of the builder for `name`: `None` when another process holds
    /// it and `wait` is false. [`ready_build_running`](Self::ready_build_running)
    /// holds it for an instant, so a builder that does not wait still tries
    /// for [`PROBE_GRACE`] before it leaves the work to the holder.
    /// Filesystems without locks build unlocked (two builders then only do
    /// the same work twice).
    pub fn lock_ready_build(
        &self,
        name: &str,
        wait: bool,
    ) -> Result<Option<BuildLock>, CacheError> {
        if wait {
            return self.try_lock_ready_build(name, true);
        }
        let deadline = std::time::Instant::now() + PROBE_GRACE;
        loop {
            if let Some(lock) = self.try_lock_ready_build(name, false)? {
                return Ok(Some(lock));
            }
            if std::time::Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    fn try_lock_ready_build(
        &self,
        name: &str,
        wait: bool,
    ) -> Result<Option<BuildLock>, CacheError> {
        let path = self.mark_path(name)?.with_extension("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| CacheError::Io {
                what: format!("cannot open {}", path.display()),
                source,
            })?;
        let operation = if wait {
            rustix::fs::FlockOperation::LockExclusive
        } else {
            rustix::fs::FlockOperation::NonBlockingLockExclusive
        };
        match rustix::fs::flock(&file, operation) {
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            _ => Ok(Some(BuildLock { _file: file })),
        }
    }

    /// Whether a builder holds the lock for `name` now (taking it for an
    /// instant to find out).
    pub fn ready_build_running(&self, name: &str) -> bool {
        matches!(self.try_lock_ready_build(name, false), Ok(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CompileResult, Stored};

    fn cache() -> (tempfile::TempDir, Cache) {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open_at(&dir.path().join("c"), 1 << 30).unwrap();
        (dir, cache)
    }

    /// Publishes an entry for `key` the way the wrapper does: an artifact in
    /// a build's output directory, named by rustc's artifact notification.
    fn publish(cache: &Cache, dir: &std::path::Path, key: &str) {
        let out = dir.join(format!("t-{key}/target/debug/deps"));
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("libdemo-x.rlib"), b"rlib").unwrap();
        let args: Vec<String> = [
            "rustc",
            "--crate-name",
            "demo",
            "/src/demo.rs",
            "--error-format=json",
            "--json=artifacts",
            "--emit=link",
            "--out-dir",
            out.to_str().unwrap(),
            "-L",
            &format!("dependency={}", out.display()),
        ]
        .map(String::from)
        .to_vec();
        let invocation = crate::invocation::parse(&args, &[]).unwrap();
        let stderr = format!(
            "{{\"artifact\":\"{}/libdemo-x.rlib\",\"emit\":\"link\"}}\n",
            out.display()
        );
        let result = CompileResult {
            stdout: b"",
            stderr: stderr.as_bytes(),
            compile_ms: 1,
        };
        let stored = cache.store(key, "inputs", &invocation, &result).unwrap();
        assert!(matches!(stored, Stored::Published { .. }), "{stored:?}");
    }

    #[test]
    fn a_mark_holds_while_its_entries_are_there() {
        let (dir, cache) = cache();
        publish(&cache, dir.path(), "aa01");
        publish(&cache, dir.path(), "bb02");
        cache.record(Kind::Miss, "aa01", "warm", "demo", 0);
        cache.record(Kind::Hit, "bb02", "warm", "demo", 5);
        cache.record(Kind::Hit, "cc03", "another", "demo", 5);
        assert!(!cache.is_ready("runtime-1"));
        assert_eq!(cache.mark_ready("runtime-1", "warm").unwrap(), 2);
        assert!(cache.is_ready("runtime-1"));
        // An evicted (or damaged and removed) entry: the mark stops holding.
        std::fs::remove_dir_all(cache.entry_dir("bb02")).unwrap();
        assert!(!cache.is_ready("runtime-1"));
        // Clearing the cache leaves nothing it could hold on to.
        publish(&cache, dir.path(), "bb02");
        assert!(cache.is_ready("runtime-1"));
        cache.clear().unwrap();
        assert!(!cache.is_ready("runtime-1"));
    }

    #[test]
    fn nothing_is_marked_for_an_incomplete_or_empty_build() {
        let (dir, cache) = cache();
        publish(&cache, dir.path(), "aa01");
        cache.record(Kind::Miss, "aa01", "warm", "demo", 0);
        cache.record(Kind::Miss, "dd04", "warm", "big", 0);
        assert!(cache.mark_ready("m", "warm").is_err());
        assert!(cache.mark_ready("m", "idle").is_err());
        assert!(!cache.is_ready("m"));
        for bad in ["", ".hidden", "a/b", "../x"] {
            assert!(cache.mark_ready(bad, "warm").is_err(), "{bad}");
            assert!(!cache.is_ready(bad));
        }
    }

    #[test]
    fn one_builder_at_a_time() {
        let (_dir, cache) = cache();
        assert!(!cache.ready_build_running("m"));
        let held = cache.lock_ready_build("m", false).unwrap();
        assert!(held.is_some());
        assert!(cache.ready_build_running("m"));
        assert!(cache.lock_ready_build("m", false).unwrap().is_none());
        drop(held);
        assert!(!cache.ready_build_running("m"));
        assert!(cache.lock_ready_build("m", true).unwrap().is_some());
    }

    #[test]
    fn a_probe_holding_the_lock_for_an_instant_does_not_turn_a_builder_away() {
        let (_dir, cache) = cache();
        // What a probe does (take the lock to see whether it is free), held a
        // little while a builder that does not wait asks for it.
        let probe = cache.try_lock_ready_build("m", false).unwrap().unwrap();
        let cache_for_builder = cache.clone();
        let builder =
            std::thread::spawn(move || cache_for_builder.lock_ready_build("m", false).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(30));
        drop(probe);
        assert!(builder.join().unwrap().is_some());
    }
}
