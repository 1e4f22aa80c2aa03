//! Where the cache lives and how big it may grow, read from the environment.
//!
//! `FERROLAB_BUILD_CACHE_DIR` (absolute; default `$XDG_CACHE_HOME/ferrolab/build-cache`,
//! else `~/.cache/ferrolab/build-cache`) and `FERROLAB_BUILD_CACHE_MB` (default
//! [`DEFAULT_MB`]; `0` turns the cache off). A value that cannot be used turns
//! the cache off and says why ([`Settings::problem`]); it never fails a build.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The cache directory.
pub const DIR_ENV: &str = "FERROLAB_BUILD_CACHE_DIR";
/// The size limit in MB (MiB); `0` turns the cache off.
pub const MB_ENV: &str = "FERROLAB_BUILD_CACHE_MB";
/// Set (to `1`) in cargo's environment when the ferrolab binary is cargo's
/// `RUSTC_WRAPPER`; tells the binary to act as the caching wrapper.
pub const WRAPPER_ENV: &str = "FERROLAB_BUILD_CACHE_WRAPPER";
/// The default size limit.
pub const DEFAULT_MB: u64 = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The cache directory (absolute).
    pub dir: PathBuf,
    /// The size limit in bytes; 0 when the cache is off.
    pub limit_bytes: u64,
    /// Why the cache is off although it was not turned off with `0`.
    pub problem: Option<String>,
}

impl Settings {
    /// From this process's environment.
    pub fn from_env() -> Settings {
        Settings::from_vars(|name| std::env::var_os(name))
    }

    /// From the variables `var` returns (tests pass their own).
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Settings {
        let set = |name: &str| var(name).filter(|value| !value.is_empty());
        let mut problem = None;
        let default_dir = || {
            let base = set("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .filter(|path| path.is_absolute())
                .or_else(|| set("HOME").map(|home| PathBuf::from(home).join(".cache")))
                .unwrap_or_else(std::env::temp_dir);
            base.join("ferrolab").join("build-cache")
        };
        let dir = match set(DIR_ENV).map(PathBuf::from) {
            Some(dir) if dir.is_absolute() => dir,
            Some(dir) => {
                problem = Some(format!(
                    "{DIR_ENV}={} is not an absolute path; the build cache is off",
                    dir.display()
                ));
                dir
            }
            None => default_dir(),
        };
        let limit_mb = match set(MB_ENV) {
            None => DEFAULT_MB,
            Some(value) => match value.to_str().map(str::trim).map(str::parse::<u64>) {
                Some(Ok(mb)) => mb,
                _ => {
                    problem.get_or_insert_with(|| {
                        format!(
                            "{MB_ENV}={} is not a whole number of megabytes (0 turns the cache off); the build cache is off",
                            value.to_string_lossy()
                        )
                    });
                    0
                }
            },
        };
        let limit_bytes = if problem.is_some() {
            0
        } else {
            limit_mb.saturating_mul(1024 * 1024)
        };
        Settings {
            dir,
            limit_bytes,
            problem,
        }
    }

    pub fn enabled(&self) -> bool {
        self.limit_bytes > 0 && self.problem.is_none()
    }

    /// One line for people: where, how big, or why it is off.
    pub fn describe(&self) -> String {
        if let Some(problem) = &self.problem {
            problem.clone()
        } else if self.enabled() {
            format!(
                "on: {} (limit {} MB)",
                self.dir.display(),
                self.limit_bytes / (1024 * 1024)
            )
        } else {
            format!("off ({MB_ENV}=0)")
        }
    }

    /// The environment cargo needs to run `exe` (this binary) as the caching
    /// rustc wrapper; empty when the cache is off. The cache's own settings
    /// are not in it: the wrapper reads them from the environment it inherits,
    /// so changing them (`%env`) affects the next build.
    pub fn cargo_env(&self, exe: &Path) -> Vec<(String, String)> {
        let Some(exe) = exe.to_str().filter(|_| self.enabled()) else {
            return Vec::new();
        };
        vec![
            ("RUSTC_WRAPPER".to_owned(), exe.to_owned()),
            (WRAPPER_ENV.to_owned(), "1".to_owned()),
        ]
    }
}

/// [`Settings::cargo_env`] for the running binary and this process's
/// environment: what an embedding kernel passes to cargo.
pub fn cargo_env_for_this_binary() -> Vec<(String, String)> {
    match std::env::current_exe() {
        Ok(exe) => Settings::from_env().cargo_env(&exe),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Settings {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        Settings::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_follow_xdg_then_home() {
        let xdg = settings(&[("XDG_CACHE_HOME", "/x/cache"), ("HOME", "/home/u")]);
        assert_eq!(xdg.dir, Path::new("/x/cache/ferrolab/build-cache"));
        assert_eq!(xdg.limit_bytes, DEFAULT_MB * 1024 * 1024);
        assert!(xdg.enabled());
        // A relative XDG_CACHE_HOME is ignored, as the XDG spec says.
        let home = settings(&[("XDG_CACHE_HOME", "rel"), ("HOME", "/home/u")]);
        assert_eq!(home.dir, Path::new("/home/u/.cache/ferrolab/build-cache"));
    }

    #[test]
    fn explicit_dir_and_size() {
        let set = settings(&[(DIR_ENV, "/mnt/disk/cache"), (MB_ENV, " 100 ")]);
        assert_eq!(set.dir, Path::new("/mnt/disk/cache"));
        assert_eq!(set.limit_bytes, 100 * 1024 * 1024);
        assert!(
            set.describe().contains("limit 100 MB"),
            "{}",
            set.describe()
        );
    }

    #[test]
    fn zero_turns_it_off_and_cargo_gets_no_wrapper() {
        let off = settings(&[(MB_ENV, "0"), ("HOME", "/h")]);
        assert!(!off.enabled());
        assert_eq!(off.problem, None);
        assert!(off.describe().contains("off"));
        assert!(off.cargo_env(Path::new("/bin/ferrolab")).is_empty());
        let on = settings(&[("HOME", "/h")]);
        let env = on.cargo_env(Path::new("/bin/ferrolab"));
        assert!(env.contains(&("RUSTC_WRAPPER".into(), "/bin/ferrolab".into())));
        assert!(env.contains(&(WRAPPER_ENV.into(), "1".into())));
    }

    #[test]
    fn unusable_values_turn_it_off_with_a_reason() {
        let words = settings(&[(MB_ENV, "lots"), ("HOME", "/h")]);
        assert!(!words.enabled());
        assert!(words.problem.as_deref().unwrap().contains("lots"));
        let negative = settings(&[(MB_ENV, "-5"), ("HOME", "/h")]);
        assert!(!negative.enabled());
        let relative = settings(&[(DIR_ENV, "cache"), ("HOME", "/h")]);
        assert!(!relative.enabled());
        assert!(relative.describe().contains("not an absolute path"));
    }
}
