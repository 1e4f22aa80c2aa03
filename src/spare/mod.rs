//! The warm spare kernel: a restart, or the next notebook, starts in a
//! fraction of a second instead of paying evcxr's start again.
//!
//! A spare is a whole ferrolab kernel process whose engine (evcxr, its
//! rust-analyzer, the runtime process, the prelude) has started and warmed up,
//! waiting on a Unix socket before it binds any Jupyter port. When Jupyter
//! starts `ferrolab kernel -f FILE`, that process (the launcher, [`launch`])
//! first asks the spare for the same environment to adopt the connection: the
//! spare takes the launcher's working directory, the per-kernel variables
//! Jupyter sets (`JPY_SESSION_NAME`, …) and its stdout and stderr, then serves
//! the kernel. The launcher stays as the process Jupyter knows: it passes on
//! SIGTERM, SIGINT and SIGHUP and exits with the kernel's status; if it is
//! killed, the kernel notices at once and ends itself and its children. With no
//! spare (the first kernel, or memory is short), the launcher runs the kernel
//! itself, as before.
//!
//! Every kernel asks for the next spare once its engine has been idle for a
//! moment ([`keeper::spawn_detached`]), so the spare's start does not compete
//! with the kernel's first cells. Invariants:
//! - a spare is adopted only by a launch of the same binary with the same
//!   environment, except the per-kernel variables in [`VOLATILE`], which are
//!   applied to the kernel, its shell commands and its Rust runtime (the
//!   [`Key`] names the socket);
//! - at most one spare per user runs at a time (a lock file); a spare for
//!   another environment retires the old one;
//! - only the same user can talk to a spare (a 0700 directory, and the peer's
//!   uid is checked on every connection);
//! - a spare not adopted within `FERROLAB_SPARE_IDLE_MINUTES` ends itself, and
//!   none is started when less than `FERROLAB_SPARE_MIN_FREE_MB` of memory is
//!   available; `FERROLAB_SPARE=0` turns spares off.

pub mod keeper;
pub mod launch;
pub mod preload;
pub mod status;
mod wire;

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Variables Jupyter (or the shell that started it) sets differently for each
/// kernel of the same server; they do not shape the engine, so a spare adopts
/// a launch whose environment differs only in them, and takes the launch's values.
pub const VOLATILE: &[&str] = &[
    "JPY_PARENT_PID",
    "JPY_SESSION_NAME",
    "JPY_SESSION_ID",
    "KERNEL_ID",
    "PWD",
    "OLDPWD",
    "SHLVL",
    "_",
];

/// Whether `name` is one of [`VOLATILE`] (or any other `JPY_` variable).
pub fn is_volatile(name: &str) -> bool {
    name.starts_with("JPY_") || VOLATILE.contains(&name)
}

/// The spare settings, read from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub enabled: bool,
    /// No spare is started when less memory than this is available.
    pub min_free_bytes: u64,
    /// A spare not adopted within this ends itself.
    pub idle: Duration,
    /// Where the sockets and the lock live.
    pub dir: PathBuf,
    /// Whether a spare builds and loads its notebook's crates ahead
    /// (`FERROLAB_SPARE_DEPS`, see [`preload`]).
    pub preload_deps: bool,
}

const DEFAULT_MIN_FREE_MB: u64 = 3072;
const DEFAULT_IDLE_MINUTES: u64 = 60;

impl Settings {
    pub fn from_env() -> Settings {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Settings {
        let off = |name: &str| {
            matches!(
                var(name).as_deref().map(str::trim),
                Some("0" | "off" | "false" | "no")
            )
        };
        let enabled = !off("FERROLAB_SPARE");
        let number = |name: &str, default: u64| {
            var(name)
                .and_then(|value| value.trim().parse::<u64>().ok())
                .unwrap_or(default)
        };
        let dir = var("FERROLAB_SPARE_DIR")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                var("XDG_RUNTIME_DIR")
                    .filter(|dir| Path::new(dir).is_absolute())
                    .map(|dir| Path::new(&dir).join("ferrolab-spare"))
            })
            .unwrap_or_else(|| {
                // SAFETY: getuid cannot fail.
                let uid = unsafe { libc::getuid() };
                std::env::temp_dir().join(format!("ferrolab-spare-{uid}"))
            });
        Settings {
            enabled,
            min_free_bytes: number("FERROLAB_SPARE_MIN_FREE_MB", DEFAULT_MIN_FREE_MB) * 1024 * 1024,
            idle: Duration::from_secs(
                number("FERROLAB_SPARE_IDLE_MINUTES", DEFAULT_IDLE_MINUTES) * 60,
            ),
            dir,
            preload_deps: !off("FERROLAB_SPARE_DEPS"),
        }
    }

    /// The directory, created 0700 if missing; refused unless it is ours and
    /// closed to others (a socket there hands out the kernel's connection).
    pub fn private_dir(&self) -> std::io::Result<&Path> {
        match std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
        {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
        let meta = std::fs::symlink_metadata(&self.dir)?;
        // SAFETY: getuid cannot fail.
        let uid = unsafe { libc::getuid() };
        if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{} is not a directory private to this user (owner and mode 0700 needed)",
                    self.dir.display()
                ),
            ));
        }
        Ok(&self.dir)
    }

    /// The socket of the spare for the key `key` ([`Key::as_str`]).
    pub fn socket(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.sock"))
    }

    fn lock_file(&self) -> PathBuf {
        self.dir.join("spare.lock")
    }

    /// Names the socket of the spare that holds the lock.
    fn holder_file(&self) -> PathBuf {
        self.dir.join("current")
    }
}

/// What a spare must share with a launch to be adopted by it: the binary and
/// its build, the kernelspec's name and every variable not in [`VOLATILE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key(String);

impl Key {
    pub fn new(kernel_name: &str, env: &BTreeMap<String, String>) -> Key {
        let mut hash = Sha256::new();
        let exe = std::env::current_exe().unwrap_or_default();
        hash.update(exe.as_os_str().as_encoded_bytes());
        if let Ok(meta) = std::fs::metadata(&exe) {
            hash.update(meta.len().to_le_bytes());
            hash.update(meta.mtime().to_le_bytes());
            hash.update(meta.mtime_nsec().to_le_bytes());
        }
        hash.update([0]);
        hash.update(kernel_name.as_bytes());
        for (name, value) in env.iter().filter(|(name, _)| !is_volatile(name)) {
            hash.update([0]);
            hash.update(name.as_bytes());
            hash.update([b'=']);
            hash.update(value.as_bytes());
        }
        Key(hex::encode(&hash.finalize()[..12]))
    }

    pub fn of_this_process(kernel_name: &str) -> Key {
        Key::new(kernel_name, &process_env())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The environment this process was started with, before the kernel set
/// anything (`EVCXR_TMPDIR`, `PATH`), or, once a spare adopted a launch, that
/// launch's: what the next spare is started with.
static LAUNCH_ENV: std::sync::Mutex<Option<BTreeMap<String, String>>> = std::sync::Mutex::new(None);

/// Records the environment as started; call first thing in `main`.
pub fn remember_launch_env() {
    let mut slot = LAUNCH_ENV.lock().unwrap_or_else(|p| p.into_inner());
    if slot.is_none() {
        *slot = Some(process_env());
    }
}

fn set_launch_env(env: BTreeMap<String, String>) {
    *LAUNCH_ENV.lock().unwrap_or_else(|p| p.into_inner()) = Some(env);
}

/// See [`remember_launch_env`]; the current environment if it was not called.
fn launch_env() -> BTreeMap<String, String> {
    LAUNCH_ENV
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_else(process_env)
}

/// The process's environment (variables that are not UTF-8 left out: Jupyter
/// writes none, and such a launch is not adopted unless the spare lacks them too).
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .collect()
}

/// The volatile variables that differ from `ours` in `theirs`: set (`Some`)
/// or removed (`None`), in name order.
pub fn volatile_changes(
    ours: &BTreeMap<String, String>,
    theirs: &BTreeMap<String, String>,
) -> Vec<(String, Option<String>)> {
    let names: std::collections::BTreeSet<&String> = ours
        .keys()
        .chain(theirs.keys())
        .filter(|name| is_volatile(name) && name.as_str() != "_")
        .collect();
    names
        .into_iter()
        .filter(|name| ours.get(*name) != theirs.get(*name))
        .map(|name| (name.clone(), theirs.get(name).cloned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_key_ignores_per_kernel_variables_only() {
        let base = env(&[("PATH", "/bin"), ("JPY_SESSION_NAME", "a.ipynb")]);
        let other_notebook = env(&[("PATH", "/bin"), ("JPY_SESSION_NAME", "b.ipynb")]);
        let other_path = env(&[("PATH", "/usr/bin"), ("JPY_SESSION_NAME", "a.ipynb")]);
        let extra = env(&[
            ("PATH", "/bin"),
            ("JPY_SESSION_NAME", "a.ipynb"),
            ("KAGGLE_KEY", "x"),
        ]);
        assert_eq!(
            Key::new("ferrolab", &base),
            Key::new("ferrolab", &other_notebook)
        );
        assert_ne!(
            Key::new("ferrolab", &base),
            Key::new("ferrolab", &other_path)
        );
        assert_ne!(Key::new("ferrolab", &base), Key::new("ferrolab", &extra));
        assert_ne!(Key::new("ferrolab", &base), Key::new("other", &base));
    }

    #[test]
    fn volatile_changes_set_and_remove() {
        let ours = env(&[("PATH", "/bin"), ("JPY_SESSION_NAME", "a"), ("PWD", "/x")]);
        let theirs = env(&[
            ("PATH", "/bin"),
            ("JPY_SESSION_NAME", "b"),
            ("KERNEL_ID", "k"),
        ]);
        assert_eq!(
            volatile_changes(&ours, &theirs),
            vec![
                ("JPY_SESSION_NAME".to_owned(), Some("b".to_owned())),
                ("KERNEL_ID".to_owned(), Some("k".to_owned())),
                ("PWD".to_owned(), None),
            ]
        );
    }

    #[test]
    fn settings_read_switches_and_sizes() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let off = Settings::from_vars(vars(&[("FERROLAB_SPARE", "0")]));
        assert!(!off.enabled);
        let on = Settings::from_vars(vars(&[
            ("FERROLAB_SPARE_MIN_FREE_MB", "10"),
            ("FERROLAB_SPARE_IDLE_MINUTES", "2"),
            ("XDG_RUNTIME_DIR", "/run/user/7"),
        ]));
        assert!(on.enabled && on.preload_deps);
        assert!(!Settings::from_vars(vars(&[("FERROLAB_SPARE_DEPS", "0")])).preload_deps);
        assert_eq!(on.min_free_bytes, 10 * 1024 * 1024);
        assert_eq!(on.idle, Duration::from_secs(120));
        assert_eq!(on.dir, PathBuf::from("/run/user/7/ferrolab-spare"));
    }

    #[test]
    fn a_directory_open_to_others_is_refused() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("spares");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let settings = Settings {
            enabled: true,
            min_free_bytes: 0,
            idle: Duration::from_secs(1),
            dir: dir.clone(),
            preload_deps: true,
        };
        assert!(settings.private_dir().is_err());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(settings.private_dir().is_ok());
    }
}
