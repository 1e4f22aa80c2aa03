//! The checkpoint runtime in the notebook session: the `ferrolab-checkpoint`
//! crate (this repository's `crates/checkpoint`, embedded in the binary),
//! written out once per version and added to the session with `:dep`.
//!
//! Invariant: adding a crate rebuilds the session crate, and evcxr then drops
//! variables whose types are defined in the session (types from std and from
//! crates keep their identity, so their variables survive). So the runtime is
//! added alongside the user's own first `:dep` line (a rebuild that happens
//! anyway), or on first use when no variable would be dropped; when one
//! would, the caller saves what it can without the runtime instead. Nothing
//! is ever lost to it.
//!
//! The runtime is compiled without optimisation, and so is its JSON crate
//! (a cargo profile override in the build directory's parent,
//! [`write_build_profile`]): it reads and writes one small manifest per save,
//! and its hot paths are compiled in other crates at the session's level
//! anyway: hmac-sha256's compression in its own crate, and rmp-serde's code
//! for the user's types, the hashing writer and the `#[inline]` hasher calls
//! under it in the cell that saves (an unoptimised hasher call per value made
//! saves 1.5x slower).
//! Its dependencies are chosen for the same reason (see its `Cargo.toml`):
//! a first `:dep` with an empty build cache compiles 16 units and about 4 s
//! of CPU for it, no longer 34 and 15 s.

use super::journal;
use super::state::CheckpointState;
use crate::engine::Engine;
use crate::kernel::{CellContext, ExecuteOutcome};
use crate::magics::ErrorInfo;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

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
    crate::paths::ferrolab_cache_dir().join(format!(
        "checkpoint-runtime-{}-{:016x}",
        env!("CARGO_PKG_VERSION"),
        hasher.finish()
    ))
}

/// The cargo configuration, read by every build below `parent`, that
/// compiles the runtime crate without optimisation. Kernels and `ferrolab
/// prebuild` both write it beside their evcxr directory, so their builds of
/// the runtime share the build cache's entries.
pub fn write_build_profile(parent: &Path) -> std::io::Result<()> {
    let dir = parent.join(".cargo");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("config.toml"),
        "# Written by ferrolab: its checkpoint runtime needs no optimisation.\n\
         [profile.dev.package.ferrolab-checkpoint]\n\
         opt-level = 0\n\
         incremental = false\n\
         [profile.dev.package.jzon]\n\
         opt-level = 0\n",
    )
}

/// Writes the crate (atomically: a complete directory or none) and returns
/// its directory.
pub fn write_crate() -> std::io::Result<PathBuf> {
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

/// The runtime's crate name in the session (its package name, `_` for `-`).
/// ferrolab's generated code names it and gives every variable's type
/// itself, so rust-analyzer is not given it.
pub const CRATE_NAME: &str = "ferrolab_checkpoint";

/// The `:dep` line that adds the runtime.
pub fn dep_line() -> Result<String, ErrorInfo> {
    let dir = write_crate().map_err(|e| {
        ErrorInfo::new(
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

/// Names the session defines itself (types, traits, modules, …): evcxr's
/// items, less the names that only came in through `use`.
fn session_defined(engine: &Engine, state: &CheckpointState) -> BTreeSet<String> {
    let mut imported = BTreeSet::new();
    let mut defined = BTreeSet::new();
    for entry in &state.journal {
        let found = journal::definitions(&entry.code);
        imported.extend(found.imports.iter().cloned());
        defined.extend(found.names().map(str::to_owned));
    }
    engine
        .item_names()
        .into_iter()
        .filter(|name| defined.contains(name) || !imported.contains(name))
        .collect()
}

/// Variables that a rebuild of the session crate would drop: those whose type
/// names a type (or module, or trait) defined in the session. A `use`d name
/// such as `HashMap` is not one.
pub fn at_risk(engine: &Engine, state: &CheckpointState) -> Vec<(String, String)> {
    let defined = session_defined(engine, state);
    engine
        .variables()
        .into_iter()
        .filter(|(_, ty)| {
            ty.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .any(|word| defined.contains(word))
        })
        .collect()
}

/// Whether the runtime is in the session.
pub enum Readiness {
    Loaded,
    /// Adding it now would drop these variables (name, type); nothing was done.
    WouldDrop(Vec<(String, String)>),
}

impl Readiness {
    /// The reason given for each variable a save without the runtime skips.
    pub fn why_not(risky: &[(String, String)]) -> String {
        let list: Vec<String> = risky.iter().map(|(n, t)| format!("{n}: {t}")).collect();
        format!(
            "not saved: the checkpoint runtime is not in this session, and adding it now would make evcxr drop {} (their types are defined in this session); it is added with the first :dep, so a kernel whose first cells have a :dep line saves everything",
            list.join(", ")
        )
    }
}

/// Makes sure the runtime is in the session (see the module invariant).
pub fn ensure(
    engine: &Engine,
    state: &mut CheckpointState,
    cell: &CellContext,
) -> Result<Readiness, ErrorInfo> {
    if state.runtime_loaded {
        return Ok(Readiness::Loaded);
    }
    let risky = at_risk(engine, state);
    if !risky.is_empty() {
        return Ok(Readiness::WouldDrop(risky));
    }
    let dep = dep_line()?;
    super::warmup::stop();
    match engine.execute(&dep, 1, cell) {
        ExecuteOutcome::Ok { .. } => {
            state.runtime_loaded = true;
            Ok(Readiness::Loaded)
        }
        ExecuteOutcome::Error(error) => Err(ErrorInfo::new(
            "CheckpointError",
            format!(
                "cannot add the checkpoint runtime to the session: {} (it needs serde, rmp-serde, jzon and hmac-sha256 from crates.io, or a cargo cache that has them)",
                error.evalue
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hidden_crate_name_is_the_runtimes_package_and_its_dep_line() {
        let manifest = SOURCES
            .iter()
            .find(|(path, _)| *path == "Cargo.toml")
            .map(|(_, text)| *text)
            .unwrap();
        let package = manifest
            .lines()
            .find_map(|line| line.strip_prefix("name = "))
            .map(|name| name.trim().trim_matches('"'))
            .unwrap();
        assert_eq!(package.replace('-', "_"), CRATE_NAME);
        assert!(
            dep_line()
                .unwrap()
                .starts_with(&format!(":dep {package} = {{ path = "))
        );
    }
}
