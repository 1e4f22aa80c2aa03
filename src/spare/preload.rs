//! A spare builds and loads the crates of the notebook whose kernel started
//! it, so that notebook's next kernel (a restart, Restart & Run All) finds
//! its `:dep` lines done: they run as no-ops instead of a build.
//!
//! Every kernel writes its session's `:dep` lines (after each cell that
//! changed them) to a file in the spare directory named by its spare key and
//! its notebook (`JPY_SESSION_NAME`); a spare watches the file of its own key
//! and notebook and runs new lines in its engine while nobody waits. The
//! crates come from the build cache: the kernel that added them just built them.
//!
//! Invariants:
//! - only lines the same user's kernel ran for the same notebook, in the same
//!   environment, are ever run (the file lives in the 0700 spare directory
//!   and is written 0600);
//! - a notebook that adopts a spare whose crates were loaded for another one
//!   gets a cleared session (evcxr's `:clear`, then the prelude again) before
//!   its first cell, never crates it did not ask for;
//! - nothing is loaded after the spare was adopted; a load under way when it
//!   is adopted finishes first (the first cell waits for it, as it would have
//!   waited for its own `:dep`);
//! - only a named notebook's crates are loaded ahead (Jupyter servers set
//!   `JPY_SESSION_NAME`; a frontend that does not gets the spare without them);
//! - `FERROLAB_SPARE_DEPS=0` turns it off.

use super::{Key, Settings};
use crate::cells::Router;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often a waiting spare looks at its notebook's file.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The notebook a kernel (or spare) environment belongs to.
pub fn notebook_of(env: &BTreeMap<String, String>) -> String {
    env.get("JPY_SESSION_NAME").cloned().unwrap_or_default()
}

/// The file for `notebook`'s crates; `None` for a kernel whose frontend does
/// not name its notebook (no `JPY_SESSION_NAME`): two notebooks could not be
/// told apart, and one would get the other's crates.
fn deps_file(settings: &Settings, key: &Key, notebook: &str) -> Option<PathBuf> {
    use sha2::{Digest, Sha256};
    if notebook.trim().is_empty() {
        return None;
    }
    let tag = hex::encode(&Sha256::digest(notebook.as_bytes())[..8]);
    Some(settings.dir.join(format!("{}-{tag}.deps", key.as_str())))
}

/// Records the `:dep` lines of this kernel's session for its next spare.
pub fn remember(kernel_name: &str, lines: &[String]) {
    let settings = Settings::from_env();
    if !settings.enabled || !settings.preload_deps || settings.private_dir().is_err() {
        return;
    }
    let env = super::launch_env();
    let Some(file) = deps_file(&settings, &Key::new(kernel_name, &env), &notebook_of(&env)) else {
        return;
    };
    if let Err(error) = write_lines(&file, lines) {
        log::warn!("spare: cannot record this session's crates: {error}");
    }
}

fn write_lines(file: &std::path::Path, lines: &[String]) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(std::path::Path::new("."));
    let mut staged = tempfile::Builder::new()
        .prefix(".deps-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir)?;
    staged.write_all(&serde_json::to_vec(lines).map_err(std::io::Error::other)?)?;
    staged.persist(file).map_err(|e| e.error)?;
    Ok(())
}

fn read_lines(file: &std::path::Path) -> Option<Vec<String>> {
    let text = std::fs::read(file).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The spare's side: what it loaded, and whether it was adopted.
pub struct Preloader {
    /// The notebook whose kernel started this spare.
    notebook: String,
    adopted: AtomicBool,
    /// What was loaded; held for each load, so adoption by another notebook
    /// waits for a load under way.
    loading: Mutex<Vec<String>>,
    /// A copy for `spare status`, which must answer (and the socket must
    /// take an adoption) while a load runs.
    shown: Mutex<Vec<String>>,
}

impl Preloader {
    /// For a spare started with this process's environment.
    pub fn new() -> Arc<Preloader> {
        Arc::new(Preloader {
            notebook: notebook_of(&super::process_env()),
            adopted: AtomicBool::new(false),
            loading: Mutex::new(Vec::new()),
            shown: Mutex::new(Vec::new()),
        })
    }

    /// The lines loaded so far.
    pub fn loaded(&self) -> Vec<String> {
        self.shown.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn show(&self, loaded: &[String]) {
        *self.shown.lock().unwrap_or_else(|p| p.into_inner()) = loaded.to_vec();
    }

    /// Watches the file of this spare's key and notebook until adoption.
    pub fn watch(self: &Arc<Self>, router: Arc<Router>, settings: &Settings, key: &Key) {
        if !settings.preload_deps {
            return;
        }
        let Some(file) = deps_file(settings, key, &self.notebook) else {
            return;
        };
        let me = self.clone();
        std::thread::spawn(move || {
            let mut tried: Option<Vec<String>> = None;
            while !me.adopted.load(Ordering::SeqCst) {
                std::thread::sleep(WATCH_EVERY);
                if !router.engine_ready() {
                    continue;
                }
                let Some(lines) = read_lines(&file) else {
                    continue;
                };
                if tried.as_ref() == Some(&lines) {
                    continue;
                }
                let mut loaded = me.loading.lock().unwrap_or_else(|p| p.into_inner());
                if me.adopted.load(Ordering::SeqCst) {
                    break;
                }
                if loaded.iter().any(|line| !lines.contains(line)) {
                    // The notebook dropped a crate (`:clear`): start again.
                    if let Err(error) = router.clear_session() {
                        log::warn!("spare: could not clear the session: {error}");
                        break;
                    }
                    loaded.clear();
                    me.show(&loaded);
                }
                let new: Vec<String> = lines
                    .iter()
                    .filter(|line| !loaded.contains(line))
                    .cloned()
                    .collect();
                tried = Some(lines);
                if new.is_empty() {
                    continue;
                }
                match router.preload_deps(&new) {
                    Ok(()) => {
                        log::info!(
                            "spare: loaded {} crate line(s) for the next start",
                            new.len()
                        );
                        loaded.extend(new);
                        me.show(&loaded);
                    }
                    Err(error) => log::warn!("spare: could not load {new:?}: {error}"),
                }
            }
        });
    }

    /// Called as the spare is adopted by a launch from `notebook`: no more
    /// loading; a session loaded for another notebook is cleared.
    pub fn adopted_by(&self, router: &Router, notebook: &str) {
        self.adopted.store(true, Ordering::SeqCst);
        if notebook == self.notebook {
            return;
        }
        // Waits for a load under way.
        let mut loaded = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.is_empty() {
            return;
        }
        match router.clear_session() {
            Ok(()) => log::info!("spare: adopted for another notebook; its crates were cleared"),
            Err(error) => {
                log::warn!("spare: could not clear the crates loaded for another notebook: {error}")
            }
        }
        loaded.clear();
        self.show(&loaded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_named_notebook_has_its_own_file_and_an_unnamed_one_none() {
        let settings = Settings {
            enabled: true,
            min_free_bytes: 0,
            idle: Duration::from_secs(60),
            dir: PathBuf::from("/spares"),
            preload_deps: true,
        };
        let key = Key::new("ferrolab", &BTreeMap::new());
        let a = deps_file(&settings, &key, "/work/a.ipynb").unwrap();
        let b = deps_file(&settings, &key, "/work/b.ipynb").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("/spares") && a.to_string_lossy().contains(key.as_str()));
        assert_eq!(deps_file(&settings, &key, ""), None);
        assert_eq!(deps_file(&settings, &key, "  "), None);
    }

    #[test]
    fn lines_round_trip_through_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k-n.deps");
        let lines = vec![":dep itoa = \"1\"".to_owned(), ":dep ryu".to_owned()];
        write_lines(&file, &lines).unwrap();
        assert_eq!(read_lines(&file), Some(lines));
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0);
        std::fs::write(&file, "not json").unwrap();
        assert_eq!(read_lines(&file), None);
    }
}
