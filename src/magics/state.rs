//! What the magics remember between cells: directory history and stack,
//! bookmarks (persisted), the environment set with `%env`, and the shell
//! command currently running (so an interrupt can stop it).

use super::shell::ProcessSlot;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub struct MagicState {
    /// Every directory `%cd` has been in, oldest first (IPython's `_dh`).
    pub dir_history: Vec<PathBuf>,
    /// `%pushd` / `%popd`.
    pub dir_stack: Vec<PathBuf>,
    /// Variables set (Some) or removed (None) with `%env`, applied to shell
    /// commands and the Rust runtime; the kernel's own environment is untouched.
    pub env: BTreeMap<String, Option<String>>,
    pub bookmarks_file: Option<PathBuf>,
    pub running: ProcessSlot,
    /// `%checkpoint`: journal, auto-save policy, runtime status.
    pub checkpoint: super::checkpoint::CheckpointState,
}

impl MagicState {
    pub fn new(
        running: ProcessSlot,
        environment: std::sync::Arc<crate::kernel_environment::KernelEnvironment>,
    ) -> Self {
        MagicState {
            dir_history: std::env::current_dir().into_iter().collect(),
            dir_stack: Vec::new(),
            env: BTreeMap::new(),
            bookmarks_file: bookmarks_path(),
            running,
            checkpoint: super::checkpoint::CheckpointState {
                kernel_environment: environment,
                ..Default::default()
            },
        }
    }

    /// The magic families that take part in every cell, in the order the router calls them.
    pub fn hooks(&mut self) -> [&mut dyn super::hooks::CellHooks; 1] {
        [&mut self.checkpoint]
    }

    /// The value a variable has for commands run from the notebook.
    pub fn env_var(&self, key: &str) -> Option<String> {
        match self.env.get(key) {
            Some(value) => value.clone(),
            None => std::env::var(key).ok(),
        }
    }

    /// The whole environment commands see.
    pub fn environment(&self) -> BTreeMap<String, String> {
        let mut all: BTreeMap<String, String> = std::env::vars().collect();
        for (key, value) in &self.env {
            match value {
                Some(value) => {
                    all.insert(key.clone(), value.clone());
                }
                None => {
                    all.remove(key);
                }
            }
        }
        all
    }

    /// Applies the `%env` changes to a command about to be spawned.
    pub fn apply_env(&self, command: &mut std::process::Command) {
        for (key, value) in &self.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
    }
}

/// `$FERROLAB_BOOKMARKS_FILE`, else `$XDG_DATA_HOME/ferrolab/bookmarks.json`.
fn bookmarks_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FERROLAB_BOOKMARKS_FILE") {
        return Some(PathBuf::from(path));
    }
    let data = crate::paths::base_dir(crate::paths::Base::Data)?;
    Some(data.join("ferrolab").join("bookmarks.json"))
}
