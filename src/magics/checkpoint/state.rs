//! What `%checkpoint` remembers in a kernel: the journal, the auto-save
//! policy, whether the runtime crate is in the session, and the files the
//! in-cell macro reads.

use super::journal::Entry;
use super::place::Place;
use crate::magics::ErrorInfo;
use std::time::Duration;

/// The environment the notebook's commands see (`%env` applied): where
/// checkpoint settings, object-storage credentials and the checkpoint key
/// are read from.
pub use crate::magics::hooks::Env;

/// `--keep-best METRIC:min|max:K`.
#[derive(Debug, Clone, PartialEq)]
pub struct KeepBest {
    pub metric: String,
    pub minimize: bool,
    pub count: usize,
}

/// Retention (applies after every successful save once set).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Retention {
    pub keep: Option<usize>,
    pub keep_best: Option<KeepBest>,
}

/// `%checkpoint auto`.
#[derive(Debug, Clone, PartialEq)]
pub struct Auto {
    pub every: Duration,
    /// `--dir` as given (a folder made absolute, or an `s3://` URL).
    pub dir: Option<String>,
}

#[derive(Default)]
pub struct CheckpointState {
    pub journal: Vec<Entry>,
    pub auto: Option<Auto>,
    pub retention: Retention,
    pub runtime_loaded: bool,
    /// The Rust segment now running carries the runtime in front of the
    /// user's first `:dep` (loaded once it succeeds).
    pub runtime_riding_along: bool,
    /// When this kernel last committed a checkpoint (unix seconds).
    pub last_commit_unix: Option<f64>,
    /// The checkpoint this kernel restored from (by name): never removed by
    /// retention while this kernel lives.
    pub restored_from: Option<String>,
    /// Holds the state file and session files for the in-cell macro.
    pub scratch: Option<tempfile::TempDir>,
    /// Whether the session was told about the state file.
    pub state_env_set: bool,
    /// Where this kernel last saved (what a lost-state message looks at).
    pub last_place: Option<String>,
    /// The kernel's probed facts, recorded in every manifest.
    pub kernel_environment: std::sync::Arc<crate::kernel_environment::KernelEnvironment>,
}

impl CheckpointState {
    /// Where checkpoints go, as text: `--dir`, else the auto policy's, else
    /// `$FERROLAB_CHECKPOINT_DIR`, else `./checkpoints`.
    pub fn destination(&self, explicit: Option<&str>, env: &Env) -> String {
        explicit
            .map(str::to_owned)
            .or_else(|| self.auto.as_ref().and_then(|a| a.dir.clone()))
            .or_else(|| {
                env.get("FERROLAB_CHECKPOINT_DIR")
                    .filter(|d| !d.is_empty())
                    .cloned()
            })
            .unwrap_or_else(|| "checkpoints".to_owned())
    }

    /// [`destination`](Self::destination) as a [`Place`] (a folder made
    /// absolute against the current directory, or object storage).
    pub fn place(&self, explicit: Option<&str>, env: &Env) -> Result<Place, ErrorInfo> {
        Place::parse(&self.destination(explicit, env), env)
            .map_err(|e| ErrorInfo::new("CheckpointError", e))
    }
}

impl CheckpointState {
    /// Crates loaded into the session ahead of any cell (a warm spare's
    /// preload, with the runtime): journaled as a cell that added them, so a
    /// checkpoint's restore adds them too.
    pub fn preloaded(&mut self, dep_lines: &[String]) {
        self.runtime_loaded = true;
        self.journal.push(Entry {
            code: dep_lines.join("\n"),
            unix_time: super::save::now_unix(),
        });
    }

    /// The session was cleared (evcxr's `:clear`): no runtime, no journal.
    pub fn cleared(&mut self) {
        self.runtime_loaded = false;
        self.journal.clear();
    }
}
