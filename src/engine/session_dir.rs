//! One private directory per kernel process for everything the engine writes:
//! evcxr's build directory (tens of MB per session) and the runtime link socket.
//!
//! Layout: `$TMPDIR/ferrolab-<uid>/<pid>-<random>/` (mode 0700), holding an
//! exclusive `flock` on its `lock` file for as long as the kernel lives. The
//! kernel removes its directory when it shuts down; a kernel that was killed
//! cannot, so every new kernel removes the directories whose lock is free.
//! A root that is not a real directory owned by this user is never used.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

pub struct SessionDir {
    path: PathBuf,
    _lock: File,
}

impl SessionDir {
    /// Creates this kernel's directory, first sweeping away dead sessions.
    pub fn create() -> std::io::Result<SessionDir> {
        let root = Self::root()?;
        sweep(&root);
        let name = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        // Built under a hidden name and renamed once locked, so a sweep running
        // in another kernel never sees it unlocked.
        let staging = root.join(format!(".new-{name}"));
        std::fs::DirBuilder::new().mode(0o700).create(&staging)?;
        let lock = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(staging.join("lock"))?;
        if !try_lock(&lock) {
            return Err(std::io::Error::other(
                "cannot lock the new session directory",
            ));
        }
        let path = root.join(name);
        std::fs::rename(&staging, &path)?;
        Ok(SessionDir { path, _lock: lock })
    }

    fn root() -> std::io::Result<PathBuf> {
        Self::root_in(&std::env::temp_dir())
    }

    /// `<base>/ferrolab-<uid>`, created 0700; refused unless it is a real
    /// directory (not a symlink) owned by this user and closed to others.
    fn root_in(base: &Path) -> std::io::Result<PathBuf> {
        // SAFETY: getuid cannot fail.
        let uid = unsafe { libc::getuid() };
        let root = base.join(format!("ferrolab-{uid}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&root) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
        let metadata = std::fs::symlink_metadata(&root)?;
        if !metadata.is_dir() || metadata.uid() != uid || metadata.mode() & 0o077 != 0 {
            return Err(std::io::Error::other(format!(
                "{} is not a private directory of this user",
                root.display()
            )));
        }
        Ok(root)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where evcxr builds the session's crate.
    pub fn evcxr_dir(&self) -> PathBuf {
        self.path.join("evcxr")
    }

    pub fn link_socket(&self) -> PathBuf {
        self.path.join("link.sock")
    }

    /// Deletes the directory (at shutdown, after evcxr is done with it).
    pub fn remove(&self) {
        if let Err(error) = std::fs::remove_dir_all(&self.path) {
            log::warn!("could not remove {}: {error}", self.path.display());
        }
    }
}

fn try_lock(file: &File) -> bool {
    // SAFETY: flock on an open descriptor.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// How long a directory without a held lock must be left alone before a
/// sweep takes it for abandoned.
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes session directories whose kernel is gone (their lock is free), and
/// staging directories and lock-less remains left alone for ten minutes.
fn sweep(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            continue;
        }
        let abandoned = || {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| modified.elapsed().ok())
                .is_some_and(|age| age > ABANDONED_AFTER)
        };
        if entry.file_name().to_string_lossy().starts_with(".new-") {
            if abandoned() {
                let _ = std::fs::remove_dir_all(&path);
            }
            continue;
        }
        match File::open(path.join("lock")) {
            Ok(lock) => {
                if try_lock(&lock) {
                    let _ = std::fs::remove_dir_all(&path);
                }
            }
            // A session is renamed into place only once it holds its lock, so
            // a directory without one is what a late build wrote after its
            // kernel removed the session.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                if abandoned() {
                    let _ = std::fs::remove_dir_all(&path);
                }
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_must_be_a_private_real_directory() {
        use std::os::unix::fs::PermissionsExt;
        // SAFETY: getuid cannot fail.
        let name = format!("ferrolab-{}", unsafe { libc::getuid() });
        let base = tempfile::tempdir().unwrap();
        let root = SessionDir::root_in(base.path()).unwrap();
        assert_eq!(std::fs::metadata(&root).unwrap().mode() & 0o777, 0o700);
        // Opened up to others: refused.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(SessionDir::root_in(base.path()).is_err());
        // A symlink planted in its place (to a directory someone else controls): refused.
        let other = tempfile::tempdir().unwrap();
        std::fs::set_permissions(other.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let planted = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(other.path(), planted.path().join(&name)).unwrap();
        let error = SessionDir::root_in(planted.path()).unwrap_err();
        assert!(
            error.to_string().contains("not a private directory"),
            "{error}"
        );
    }

    #[test]
    fn a_live_session_is_kept_and_a_dead_one_is_swept() {
        let live = SessionDir::create().unwrap();
        assert!(live.path().is_dir());
        // A session whose lock nobody holds (its kernel died).
        let dead = live.path().parent().unwrap().join("1-deadbeef");
        std::fs::create_dir_all(dead.join("evcxr")).unwrap();
        std::fs::write(dead.join("lock"), "").unwrap();
        let other = SessionDir::create().unwrap();
        assert!(!dead.exists(), "dead session swept");
        assert!(live.path().is_dir(), "live session kept");
        live.remove();
        other.remove();
        assert!(!live.path().exists());
    }

    #[test]
    fn remains_without_a_lock_are_swept_once_left_alone() {
        let live = SessionDir::create().unwrap();
        let root = live.path().parent().unwrap().to_owned();
        // What cargo writes when a build outlives its kernel's removal.
        let old = root.join(format!("1-old{}", std::process::id()));
        let fresh = root.join(format!("1-fresh{}", std::process::id()));
        for remains in [&old, &fresh] {
            std::fs::create_dir_all(remains.join("evcxr/target")).unwrap();
            std::fs::write(remains.join("evcxr/Cargo.lock"), "").unwrap();
        }
        let long_ago = std::time::SystemTime::now() - ABANDONED_AFTER * 2;
        File::open(&old).unwrap().set_modified(long_ago).unwrap();
        let other = SessionDir::create().unwrap();
        assert!(!old.exists(), "remains left alone for long are swept");
        assert!(fresh.is_dir(), "remains a build may still write are kept");
        std::fs::remove_dir_all(&fresh).unwrap();
        live.remove();
        other.remove();
    }
}
