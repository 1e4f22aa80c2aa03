//! What a killed build of the session crate leaves behind, and its removal.
//!
//! evcxr builds every cell as one crate, `ctx`, with incremental compilation
//! on. rustc reuses object files from the last finished incremental session
//! and hard-links them into place; a rustc killed part-way (an interrupt) can
//! leave objects and session directories that a later build takes for
//! valid, and the cell then fails to link with errors such as `undefined
//! hidden symbol`. After a killed build the engine removes the crate's
//! incremental cache, its objects and its fingerprint, so the next cell
//! builds `ctx` from scratch. Dependencies (`:dep` crates) are left alone:
//! cargo only records them as built once they are complete.

use std::path::{Path, PathBuf};

/// The crate evcxr builds each cell as.
const SESSION_CRATE: &str = super::evcxr_contract::SESSION_CRATE;

/// Removes the session crate's build state under `crate_dir` (evcxr's build
/// directory); returns what was removed.
pub fn remove_session_crate_artifacts(crate_dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(targets) = std::fs::read_dir(crate_dir.join("target")) else {
        return removed;
    };
    // target/debug and target/<triple>/debug (evcxr builds with --target).
    for target in targets.flatten() {
        for profile in [target.path(), target.path().join("debug")] {
            for (folder, is_ours) in [
                ("incremental", is_crate_entry as fn(&str) -> bool),
                (".fingerprint", is_crate_entry),
                ("deps", is_crate_output),
                ("", is_crate_output),
            ] {
                let folder = if folder.is_empty() {
                    profile.clone()
                } else {
                    profile.join(folder)
                };
                remove_matching(&folder, is_ours, &mut removed);
            }
        }
    }
    removed
}

fn remove_matching(folder: &Path, is_ours: fn(&str) -> bool, removed: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !is_ours(&name.to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        let result = match entry.file_type() {
            Ok(kind) if kind.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        match result {
            Ok(()) => removed.push(path),
            Err(error) => log::warn!("could not remove {}: {error}", path.display()),
        }
    }
}

/// `ctx-<hash>` (incremental and fingerprint directories).
fn is_crate_entry(name: &str) -> bool {
    name.strip_prefix(SESSION_CRATE)
        .is_some_and(|rest| rest.starts_with('-'))
}

/// Files rustc writes for the crate: `ctx-<hash>.*.o`, `ctx.d`, `libctx.so`.
/// Not `libcode_N.so`: the runtime has those loaded.
fn is_crate_output(name: &str) -> bool {
    is_crate_entry(name)
        || name.starts_with(&format!("{SESSION_CRATE}."))
        || name.starts_with(&format!("lib{SESSION_CRATE}."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_the_session_crate_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let debug = dir.path().join("target/x86_64-unknown-linux-gnu/debug");
        let ours = [
            "incremental/ctx-1c5fto1udg1dq/s-hon82ay1j3-0ny5lnv-working/a.o",
            ".fingerprint/ctx-8e7ff4596cc1c51f/lib-ctx",
            "deps/ctx-8e7ff4596cc1c51f.ctx.abc-cgu.0.rcgu.o",
            "deps/ctx.d",
            "deps/libctx.so",
            "libctx.d",
        ];
        let kept = [
            "incremental/regex-0abc/s-1/x.o",
            ".fingerprint/regex-1234/lib-regex",
            "deps/libregex-1234.rlib",
            "deps/libctxual-99.rlib",
            "libcode_3.so",
            "build/ctx-build-script/output",
        ];
        for file in ours.iter().chain(kept.iter()) {
            let path = debug.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"x").unwrap();
        }
        let removed = remove_session_crate_artifacts(dir.path());
        for file in ours {
            assert!(!debug.join(file).exists(), "{file} should be gone");
        }
        for file in kept {
            assert!(debug.join(file).exists(), "{file} should be kept");
        }
        assert_eq!(removed.len(), 6, "{removed:?}");
        // Nothing there: nothing to do.
        assert!(remove_session_crate_artifacts(&dir.path().join("missing")).is_empty());
    }
}
