//! The checkpoint runtime in the notebook session: the `ferrolab-checkpoint`
//! crate (this repository's `crates/checkpoint`, embedded in the binary),
//! written out once per version and added to the session with `:dep`.
//!
//! Invariant: adding a crate rebuilds the session crate, and evcxr then drops
//! variables whose types are defined in the session. So the runtime is added
//! alongside the user's own first `:dep` line (a rebuild that happens anyway),
//! or on first use only when no variable would be dropped; otherwise the
//! magic refuses and says how to proceed. Nothing is ever lost to it.

use super::state::CheckpointState;
use crate::engine::Engine;
use crate::kernel::{CellContext, ExecuteOutcome};
use crate::magics::MagicError;
use std::path::PathBuf;

const SOURCES: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../../crates/checkpoint/Cargo.toml"),
    ),
    (
        "src/lib.rs",
        include_str!("../../../crates/checkpoint/src/lib.rs"),
    ),
    (
        "src/commit.rs",
        include_str!("../../../crates/checkpoint/src/commit.rs"),
    ),
    (
        "src/crash.rs",
        include_str!("../../../crates/checkpoint/src/crash.rs"),
    ),
    (
        "src/hash.rs",
        include_str!("../../../crates/checkpoint/src/hash.rs"),
    ),
    (
        "src/in_cell.rs",
        include_str!("../../../crates/checkpoint/src/in_cell.rs"),
    ),
    (
        "src/manifest.rs",
        include_str!("../../../crates/checkpoint/src/manifest.rs"),
    ),
    (
        "src/vars.rs",
        include_str!("../../../crates/checkpoint/src/vars.rs"),
    ),
];

/// Where the crate is written: `$XDG_CACHE_HOME/ferrolab` (else
/// `~/.cache/ferrolab`, else the temp dir), one directory per content.
fn crate_dir() -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    SOURCES.hash(&mut hasher);
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("ferrolab").join(format!(
        "checkpoint-runtime-{}-{:016x}",
        env!("CARGO_PKG_VERSION"),
        hasher.finish()
    ))
}

/// Writes the crate (atomically: a complete directory or none).
fn write_crate() -> std::io::Result<PathBuf> {
    let dir = crate_dir();
    if dir.join("Cargo.toml").exists() {
        return Ok(dir);
    }
    let parent = dir.parent().unwrap_or(&dir).to_owned();
    std::fs::create_dir_all(&parent)?;
    let staging = tempfile::Builder::new()
        .prefix(".checkpoint-runtime-")
        .tempdir_in(&parent)?;
    for (path, text) in SOURCES {
        let target = staging.path().join(path);
        std::fs::create_dir_all(target.parent().unwrap_or(staging.path()))?;
        std::fs::write(target, text)?;
    }
    let staged = staging.keep();
    if std::fs::rename(&staged, &dir).is_err() {
        // Another kernel wrote it first.
        let _ = std::fs::remove_dir_all(&staged);
    }
    Ok(dir)
}

/// The `:dep` line that adds the runtime.
pub fn dep_line() -> Result<String, MagicError> {
    let dir = write_crate().map_err(|e| {
        MagicError::new(
            "CheckpointError",
            format!("cannot write the checkpoint runtime crate: {e}"),
        )
    })?;
    Ok(format!(
        ":dep ferrolab-checkpoint = {{ path = {:?} }}",
        dir.to_string_lossy()
    ))
}

/// Adds the runtime to `code` (as its first line) when the cell adds crates
/// of its own.
pub fn piggyback(code: &str, state: &CheckpointState) -> Option<String> {
    if state.runtime_loaded {
        return None;
    }
    // Prepended, so the router shifts error line numbers by exactly one.
    code.lines()
        .any(|line| line.trim_start().starts_with(":dep "))
        .then(|| dep_line().ok())
        .flatten()
        .map(|dep| format!("{dep}\n{code}"))
}

/// Variables that a rebuild of the session crate would drop: those whose type
/// names an item defined in the session.
pub fn at_risk(engine: &Engine) -> Vec<(String, String)> {
    let items = engine.item_names();
    engine
        .variables()
        .into_iter()
        .filter(|(_, ty)| {
            ty.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .any(|word| items.iter().any(|item| item == word))
        })
        .collect()
}

/// Makes sure the runtime is in the session (see the module invariant).
pub fn ensure(
    engine: &Engine,
    state: &mut CheckpointState,
    cell: &CellContext,
) -> Result<(), MagicError> {
    if state.runtime_loaded {
        return Ok(());
    }
    let risky = at_risk(engine);
    if !risky.is_empty() {
        let list: Vec<String> = risky.iter().map(|(n, t)| format!("{n}: {t}")).collect();
        return Err(MagicError::new(
            "CheckpointError",
            format!(
                "%checkpoint needs its runtime crate in the session, and adding a crate now would make evcxr drop {} (their types are defined in this session). \
                 Nothing was changed. Run `%checkpoint init` (or any `:dep` line) before defining such variables, e.g. in the first cell, then run the cells again.",
                list.join(", ")
            ),
        ));
    }
    let dep = dep_line()?;
    match engine.execute(&dep, 1, cell) {
        ExecuteOutcome::Ok { .. } => {
            state.runtime_loaded = true;
            Ok(())
        }
        ExecuteOutcome::Error(error) => Err(MagicError::new(
            "CheckpointError",
            format!(
                "cannot add the checkpoint runtime to the session: {} (it needs serde, serde_json, rmp-serde and sha2 from crates.io, or a cargo cache that has them)",
                error.evalue
            ),
        )),
    }
}
