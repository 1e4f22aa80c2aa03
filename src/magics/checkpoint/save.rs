//! `%checkpoint save`: variables through generated code in the session, then
//! the session files, the user's files and the environment, committed with
//! the crate's crash-safe protocol, then retention.
//!
//! Invariants: variables are only borrowed by the generated code (every one
//! stays usable); a write error (a full disk, a failed fsync) aborts the whole
//! save and removes its staging directory; a failing `Serialize` fails only
//! its variable; when the runtime cannot be added without evcxr dropping
//! variables, the save keeps the code, the files and the environment and says
//! which variables it could not keep, instead of refusing.
//! `--files` takes paths, folders and globs; a file under the current
//! directory is recorded relative to it (a restore puts it back there).

use super::journal;
use super::place::Place;
use super::retention;
use super::runtime::{self, Readiness};
use super::state::CheckpointState;
use crate::engine::Engine;
use crate::kernel::{CellContext, ExecuteOutcome};
use crate::magics::ErrorInfo;
use ferrolab_checkpoint::commit::Stage;
use ferrolab_checkpoint::{Manifest, Status, UserFile};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct Request {
    pub place: Place,
    /// Added to the name: `ckpt-000042-LABEL`.
    pub label: Option<String>,
    pub vars: Option<Vec<String>>,
    pub exclude: Vec<String>,
    pub files: Vec<String>,
    pub metrics: BTreeMap<String, f64>,
    pub origin: &'static str,
}

pub struct Saved {
    pub manifest: Manifest,
    /// Where it went, as shown to the user.
    pub place: String,
    pub seconds: f64,
    pub removed: Vec<String>,
}

pub fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn error(message: impl Into<String>) -> ErrorInfo {
    ErrorInfo::new("CheckpointError", message)
}

/// The session variables a save covers, in name order.
pub fn selected_variables(
    engine: &Engine,
    vars: Option<&[String]>,
    exclude: &[String],
) -> Result<Vec<(String, String)>, ErrorInfo> {
    let all = engine.variables();
    if let Some(wanted) = vars {
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|name| !all.iter().any(|(n, _)| n == *name))
            .collect();
        if !missing.is_empty() {
            let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
            return Err(ErrorInfo::usage(format!(
                "no variable named {} in the session (defined: {})",
                missing
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            )));
        }
    }
    Ok(all
        .into_iter()
        .filter(|(name, _)| vars.is_none_or(|wanted| wanted.contains(name)))
        .filter(|(name, _)| !exclude.contains(name))
        .collect())
}

/// The block evaluated in the session: one probe call per variable.
pub fn variables_code(stage: Option<&Path>, report: &Path, vars: &[(String, String)]) -> String {
    let writer = match stage {
        Some(stage) => format!(
            "ferrolab_checkpoint::VarWriter::new(std::path::Path::new({:?}))",
            stage.to_string_lossy()
        ),
        None => "ferrolab_checkpoint::VarWriter::dry_run()".to_owned(),
    };
    let mut code = format!(
        "{{\n    #[allow(unused_imports)]\n    use ferrolab_checkpoint::{{ViaNothing as _, ViaSerde as _}};\n    let mut __ferrolab_writer = {writer};\n"
    );
    for (name, ty) in vars {
        code.push_str(&format!(
            "    (&&ferrolab_checkpoint::Probe(&{name})).ferrolab_save(&mut __ferrolab_writer, {name:?}, {ty:?});\n"
        ));
    }
    code.push_str(&format!(
        "    let _ = __ferrolab_writer.write_report(std::path::Path::new({:?}));\n}}",
        report.to_string_lossy()
    ));
    code
}

/// Runs the probe block; returns the variables (and files) it reports. When
/// the runtime cannot be added without dropping variables, nothing runs and
/// every variable is reported skipped with the reason.
pub fn run_variables(
    engine: &Engine,
    state: &mut CheckpointState,
    cell: &CellContext,
    stage: Option<&Path>,
    vars: &[(String, String)],
) -> Result<Manifest, ErrorInfo> {
    if let Readiness::WouldDrop(risky) = runtime::ensure(engine, state, cell)? {
        let reason = Readiness::why_not(&risky);
        let variables = vars
            .iter()
            .map(|(name, ty)| ferrolab_checkpoint::Variable {
                name: name.clone(),
                ty: ty.clone(),
                status: Status::Skipped,
                reason: Some(reason.clone()),
                file: None,
            })
            .collect();
        return Ok(Manifest {
            variables,
            ..Manifest::default()
        });
    }
    let scratch = tempfile::Builder::new()
        .prefix("ferrolab-ckpt-report-")
        .tempdir()
        .map_err(|e| error(format!("cannot create a temporary file: {e}")))?;
    let report = scratch.path().join("report.json");
    let code = variables_code(stage, &report, vars);
    if let ExecuteOutcome::Error(failure) = engine.execute(&code, 1, cell) {
        return Err(ErrorInfo {
            ename: failure.ename,
            evalue: format!("the save stopped: {}", failure.evalue),
            traceback: failure.traceback,
        });
    }
    let text = std::fs::read_to_string(&report).map_err(|e| {
        error(format!(
            "the session did not report what it saved ({e}); nothing was committed"
        ))
    })?;
    ferrolab_checkpoint::vars::parse_report(&text)
        .map_err(|e| error(format!("the session's save report is not one: {e}")))
}

/// Files a save keeps about the session (deps, items, journal, Cargo.lock).
pub fn session_files(state: &CheckpointState) -> Vec<(String, Vec<u8>)> {
    let mut deps: Vec<String> = Vec::new();
    let mut items = String::new();
    let mut journal_lines = String::new();
    for (index, entry) in state.journal.iter().enumerate() {
        let found = journal::definitions(&entry.code);
        for dep in found.deps {
            if !deps.contains(&dep) {
                deps.push(dep);
            }
        }
        if !found.items.is_empty() {
            items.push_str(&format!("// journal entry {}\n", index + 1));
            for item in found.items {
                items.push_str(&item.source);
                items.push('\n');
            }
        }
        journal_lines
            .push_str(&json!({"code": entry.code, "unix_time": entry.unix_time}).to_string());
        journal_lines.push('\n');
    }
    let mut files = vec![
        ("deps.txt".to_owned(), (deps.join("\n") + "\n").into_bytes()),
        ("items.rs".to_owned(), items.into_bytes()),
        ("journal.jsonl".to_owned(), journal_lines.into_bytes()),
    ];
    if let Some(lock) =
        crate::engine::evcxr_contract::session_cargo_lock().and_then(|p| std::fs::read(p).ok())
    {
        files.push(("Cargo.lock".to_owned(), lock));
    }
    files
}

/// What `--files NAME` means: the files a glob matches, or the file or
/// every file under the folder NAME names. A pattern that matches nothing is
/// an error (a typo must not save an empty checkpoint silently).
fn expand_argument(named: &str) -> Result<Vec<PathBuf>, String> {
    let is_pattern = named.contains(['*', '?', '[']);
    if !is_pattern {
        return expand_files(Path::new(named)).map_err(|e| e.to_string());
    }
    let mut found = Vec::new();
    let matches = glob::glob(named).map_err(|e| format!("not a valid pattern: {e}"))?;
    for path in matches.flatten() {
        found.extend(expand_files(&path).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    if found.is_empty() {
        return Err("the pattern matches no file".into());
    }
    Ok(found)
}

/// Every regular file under `path` (itself if it is a file).
fn expand_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(path)?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        out.extend(expand_files(&entry.path())?);
    }
    Ok(out)
}

fn write_failure(dir: &str, what: &str, e: &std::io::Error) -> ErrorInfo {
    let hint = match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
            " The disk is full: free space, or save elsewhere with --dir."
        }
        _ => "",
    };
    error(format!(
        "the checkpoint could not be written to {dir}: {what}: {e}.{hint} Nothing was committed; earlier checkpoints are intact."
    ))
}

/// The whole save.
pub fn save(
    engine: &Engine,
    state: &mut CheckpointState,
    cell: &CellContext,
    request: Request,
) -> Result<Saved, ErrorInfo> {
    let started = Instant::now();
    let place = &request.place;
    let shown_place = place.describe();
    // User files first: a typo fails before anything is written.
    let mut user_files: Vec<(String, PathBuf)> = Vec::new();
    for named in &request.files {
        let found = expand_argument(named)
            .map_err(|e| ErrorInfo::usage(format!("--files {named}: {e}; nothing was saved")))?;
        for file in found {
            user_files.push((ferrolab_checkpoint::manifest::restore_name(&file), file));
        }
    }
    let vars = selected_variables(engine, request.vars.as_deref(), &request.exclude)?;
    let root = place.staging_root().map_err(error)?;
    ferrolab_checkpoint::commit::sweep(&root);
    let mut stage = Stage::begin(&root).map_err(|e| {
        error(format!(
            "cannot create the checkpoint directory {}: {e}",
            root.display()
        ))
    })?;
    let mut manifest = Manifest {
        origin: request.origin.to_owned(),
        metrics: request.metrics.clone(),
        ..Manifest::default()
    };
    if !vars.is_empty() {
        let reported = run_variables(engine, state, cell, Some(stage.path()), &vars)?;
        if let Some(io) = reported.variables.iter().find(|v| {
            v.status == Status::Failed
                && v.reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("writing failed"))
        }) {
            return Err(error(format!(
                "the checkpoint could not be written to {shown_place}: variable `{}`: {}. Nothing was committed; earlier checkpoints are intact.",
                io.name,
                io.reason.clone().unwrap_or_default()
            )));
        }
        for file in reported.files {
            stage.add_entry(file);
        }
        manifest.variables = reported.variables;
    }
    for (name, bytes) in session_files(state) {
        stage
            .write_file(&format!("session/{name}"), &bytes)
            .map_err(|e| write_failure(&shown_place, &format!("session/{name}"), &e))?;
    }
    for (index, (shown, source)) in user_files.iter().enumerate() {
        let base = source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        let stored = format!("files/{index:04}-{base}");
        stage
            .copy_file(source, &stored)
            .map_err(|e| write_failure(&shown_place, shown, &e))?;
        manifest.user_files.push(UserFile {
            original: shown.clone(),
            stored,
        });
    }
    manifest.environment = state.kernel_environment.manifest_entries();
    manifest.created_unix = now_unix();
    let committed = stage
        .commit(&mut manifest, request.label.as_deref())
        .map_err(|e| write_failure(&shown_place, "commit", &e))?;
    if let Place::Remote(remote) = place {
        // Earlier saves whose upload failed go first, in order; this one,
        // the newest in the spool, goes last.
        let (names, failed) = remote.upload_pending(Some(cell));
        if let Some(failed) = failed {
            return Err(error(format!("the upload failed: {failed}")));
        }
        manifest.name = names.last().cloned().unwrap_or_default();
    }
    drop(committed);
    state.last_commit_unix = Some(manifest.created_unix);
    state.last_place = Some(shown_place.clone());
    ferrolab_checkpoint::crash::point("retention");
    let removed = retention::apply(place, &state.retention, state.restored_from.as_deref());
    Ok(Saved {
        manifest,
        place: shown_place,
        seconds: started.elapsed().as_secs_f64(),
        removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_code_borrows_each_variable_and_quotes_types() {
        let code = variables_code(
            Some(Path::new("/tmp/stage")),
            Path::new("/tmp/r.json"),
            &[
                ("weights".into(), "Vec<f32>".into()),
                ("name".into(), "String".into()),
            ],
        );
        assert!(code.starts_with('{') && code.ends_with('}'));
        assert!(code.contains(
            "Probe(&weights)).ferrolab_save(&mut __ferrolab_writer, \"weights\", \"Vec<f32>\")"
        ));
        assert!(code.contains("VarWriter::new(std::path::Path::new(\"/tmp/stage\"))"));
        assert!(
            !code.contains("let weights"),
            "nothing may be moved or rebound"
        );
        let dry = variables_code(None, Path::new("/tmp/r.json"), &[]);
        assert!(dry.contains("VarWriter::dry_run()"));
    }
}
