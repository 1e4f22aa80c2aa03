//! Kernel side of `ferrolab::checkpoint!`: before a Rust cell, write the
//! settings and session files the session's in-cell save reads (see the
//! crate's `in_cell` module); after it, notice the checkpoints the cell
//! committed by itself, upload them when the destination is object storage,
//! and apply retention to them.

use super::place::Place;
use super::retention;
use super::save::session_files;
use super::state::{CheckpointState, Env};
use crate::engine::Engine;
use crate::kernel::{CellContext, StreamName};
use ferrolab_checkpoint::commit;
use ferrolab_checkpoint::in_cell::{STATE_ENV, Settings};
use ferrolab_checkpoint::manifest::Depth;

/// Default rate for `checkpoint!` when `%checkpoint auto` is off.
const DEFAULT_EVERY_SECS: f64 = 600.0;

/// Writes the state file (runtime loaded only). Errors are logged: a cell
/// never fails because of this.
pub fn prepare(engine: &Engine, state: &mut CheckpointState, env: &Env) {
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
    let dir = match state.place(None, env).map(|p| p.staging_root()) {
        Ok(Ok(dir)) => dir,
        Ok(Err(error)) => {
            log::warn!("checkpoint destination: {error}");
            return;
        }
        Err(error) => {
            log::warn!("checkpoint destination: {}", error.evalue);
            return;
        }
    };
    let settings = Settings {
        dir,
        every_secs: state
            .auto
            .as_ref()
            .map_or(DEFAULT_EVERY_SECS, |a| a.every.as_secs_f64()),
        last_commit_unix: state.last_commit_unix.unwrap_or(0.0),
        types: engine.variables().into_iter().collect(),
        session_dir: Some(session),
        environment: state.kernel_environment.manifest_entries(),
    };
    let file = scratch.join("state.json");
    if let Err(error) = std::fs::write(&file, settings.to_json().dump()) {
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

/// After a cell (also one that crashed or was interrupted): checkpoints
/// committed from inside it are uploaded when the destination is object
/// storage, update the last-commit time and get retention.
pub fn after_cell(state: &mut CheckpointState, cell: &CellContext, env: &Env) {
    if !state.runtime_loaded {
        return;
    }
    let Ok(place) = state.place(None, env) else {
        return;
    };
    let Ok(root) = place.staging_root() else {
        return;
    };
    let Ok(listed) = commit::list(&root, Depth::Sizes) else {
        return;
    };
    let newest = listed
        .iter()
        .rev()
        .filter_map(|l| l.manifest.as_ref().ok())
        .find(|m| m.origin == "in-cell")
        .map(|m| m.created_unix);
    let Some(time) = newest.filter(|t| *t > state.last_commit_unix.unwrap_or(0.0)) else {
        return;
    };
    state.last_commit_unix = Some(time);
    state.last_place = Some(place.describe());
    if let Place::Remote(remote) = &place {
        let (names, failed) = remote.upload_pending(Some(cell));
        if !names.is_empty() {
            cell.stream(
                StreamName::Stderr,
                &format!("uploaded {} to {}\n", names.join(", "), remote.url()),
            );
        }
        if let Some(failed) = failed {
            cell.stream(
                StreamName::Stderr,
                &format!("checkpoint upload failed: {failed}\n"),
            );
        }
    }
    let removed = retention::apply(&place, &state.retention, state.restored_from.as_deref());
    if !removed.is_empty() {
        cell.stream(
            StreamName::Stderr,
            &format!("checkpoint retention removed {}\n", removed.join(", ")),
        );
    }
}
