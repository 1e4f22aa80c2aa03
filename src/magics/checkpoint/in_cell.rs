//! Kernel side of `ferrolab::checkpoint!`: before a Rust cell, write the
//! settings and session files the session's in-cell save reads (see the
//! crate's `in_cell` module); after it, notice the checkpoints the cell
//! committed by itself and apply retention to them.

use super::retention;
use super::save::{environment, session_files};
use super::state::CheckpointState;
use crate::engine::Engine;
use ferrolab_checkpoint::commit;
use ferrolab_checkpoint::in_cell::STATE_ENV;
use ferrolab_checkpoint::manifest::Depth;
use serde_json::json;

/// Default rate for `checkpoint!` when `%checkpoint auto` is off.
const DEFAULT_EVERY_SECS: f64 = 600.0;

/// Writes the state file (runtime loaded only). Errors are logged: a cell
/// never fails because of this.
pub fn prepare(engine: &Engine, state: &mut CheckpointState) {
    if !state.runtime_loaded {
        return;
    }
    if state.scratch.is_none() {
        match tempfile::Builder::new().prefix("ferrolab-ckpt-").tempdir() {
            Ok(dir) => state.scratch = Some(dir),
            Err(error) => {
                log::warn!("checkpoint state directory: {error}");
                return;
            }
        }
    }
    let Some(scratch) = state.scratch.as_ref().map(|d| d.path().to_owned()) else {
        return;
    };
    let session = scratch.join("session");
    if let Err(error) = std::fs::create_dir_all(&session) {
        log::warn!("checkpoint session files: {error}");
        return;
    }
    for (name, bytes) in session_files(state) {
        let _ = std::fs::write(session.join(name), bytes);
    }
    let types: serde_json::Map<String, serde_json::Value> = engine
        .variables()
        .into_iter()
        .map(|(name, ty)| (name, json!(ty)))
        .collect();
    let every = state
        .auto
        .as_ref()
        .map_or(DEFAULT_EVERY_SECS, |a| a.every.as_secs_f64());
    let file = scratch.join("state.json");
    let value = json!({
        "dir": state.dir(None),
        "every_secs": every,
        "last_commit_unix": state.last_commit_unix.unwrap_or(0.0),
        "types": types,
        "session_dir": session,
        "environment": environment(),
    });
    if let Err(error) = std::fs::write(&file, value.to_string()) {
        log::warn!("checkpoint state file: {error}");
        return;
    }
    if !state.state_env_set {
        match engine.set_env(STATE_ENV, Some(&file.to_string_lossy())) {
            Ok(()) => state.state_env_set = true,
            Err(error) => log::warn!("checkpoint state for the session: {error}"),
        }
    }
}

/// After a cell: checkpoints committed from inside it update the last-commit
/// time and get retention. Returns the names retention removed.
pub fn after_cell(state: &mut CheckpointState) -> Vec<String> {
    if !state.runtime_loaded {
        return Vec::new();
    }
    let dir = state.dir(None);
    let Ok(listed) = commit::list(&dir, Depth::Sizes) else {
        return Vec::new();
    };
    let newest = listed
        .iter()
        .rev()
        .filter_map(|l| l.manifest.as_ref().ok())
        .find(|m| m.origin == "in-cell")
        .map(|m| m.created_unix);
    match newest {
        Some(time) if time > state.last_commit_unix.unwrap_or(0.0) => {
            state.last_commit_unix = Some(time);
            retention::apply(&dir, &state.retention, state.restored_from.as_deref())
        }
        _ => Vec::new(),
    }
}
