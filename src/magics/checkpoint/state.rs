//! What `%checkpoint` remembers in a kernel: the journal, the auto-save
//! policy, whether the runtime crate is in the session, and the files the
//! in-cell macro reads.

use super::journal::Entry;
use std::path::PathBuf;
use std::time::Duration;

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
    pub dir: Option<PathBuf>,
}

#[derive(Default)]
pub struct CheckpointState {
    pub journal: Vec<Entry>,
    pub auto: Option<Auto>,
    pub retention: Retention,
    pub runtime_loaded: bool,
    /// When this kernel last committed a checkpoint (unix seconds).
    pub last_commit_unix: Option<f64>,
    /// Never removed by retention while this kernel lives.
    pub restored_from: Option<PathBuf>,
    /// Holds the state file and session files for the in-cell macro.
    pub scratch: Option<tempfile::TempDir>,
    /// Whether the session was told about the state file.
    pub state_env_set: bool,
    /// Where this kernel last saved (what a lost-state message looks at).
    pub last_dir: Option<PathBuf>,
}

impl CheckpointState {
    /// The directory checkpoints go to: `--dir`, else the auto policy's,
    /// else `$FERROLAB_CHECKPOINT_DIR`, else `./checkpoints`; made absolute.
    pub fn dir(&self, explicit: Option<&str>) -> PathBuf {
        let chosen = explicit
            .map(PathBuf::from)
            .or_else(|| self.auto.as_ref().and_then(|a| a.dir.clone()))
            .or_else(|| std::env::var_os("FERROLAB_CHECKPOINT_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("checkpoints"));
        if chosen.is_absolute() {
            chosen
        } else {
            std::env::current_dir()
                .map(|cwd| cwd.join(&chosen))
                .unwrap_or(chosen)
        }
    }
}
