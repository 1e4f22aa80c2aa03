//! `%checkpoint restore`: pick a valid checkpoint, then dependencies, items,
//! typed `let`s and files, reporting per variable.
//!
//! Invariants: only a checkpoint whose every hash checks is used (`latest`
//! falls back past invalid ones, naming them); one variable that no longer
//! fits its type fails alone (all `let`s are tried in one cell, and one cell
//! per variable if that fails); a checkpoint made by another user or on
//! another machine is code to run, so the user is asked first.

use super::journal::{self, ItemKind};
use super::runtime;
use super::save::now_unix;
use super::state::CheckpointState;
use crate::engine::Engine;
use crate::kernel::{CellContext, ExecuteOutcome};
use crate::magics::MagicError;
use ferrolab_checkpoint::commit::{self, Listed};
use ferrolab_checkpoint::manifest::Depth;
use ferrolab_checkpoint::{Manifest, Status};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn error(message: impl Into<String>) -> MagicError {
    MagicError::new("CheckpointError", message)
}

/// `best` needs to know which metric and which direction.
pub struct BestBy {
    pub metric: String,
    pub minimize: bool,
}

/// Finds the checkpoint to restore; warnings name the invalid ones skipped.
pub fn choose(
    dir: &Path,
    which: &str,
    best_by: Option<&BestBy>,
) -> Result<(Listed, Vec<String>), MagicError> {
    let listed = commit::list(dir, Depth::Hashes)
        .map_err(|e| error(format!("cannot read {}: {e}", dir.display())))?;
    let mut warnings = Vec::new();
    let chosen = match which {
        "latest" => {
            let mut found = None;
            for entry in listed.into_iter().rev() {
                match &entry.manifest {
                    Ok(_) => {
                        found = Some(entry);
                        break;
                    }
                    Err(reason) => warnings.push(format!("skipped {}: {reason}", entry.name)),
                }
            }
            found
        }
        "best" => {
            let by = best_by.ok_or_else(|| {
                MagicError::usage(
                    "`restore best` needs a metric: `%checkpoint restore best --metric loss:min` (or set --keep-best with %checkpoint auto)",
                )
            })?;
            let mut best: Option<(f64, Listed)> = None;
            for entry in listed {
                let value = match &entry.manifest {
                    Ok(manifest) => manifest.metrics.get(&by.metric).copied(),
                    Err(reason) => {
                        warnings.push(format!("skipped {}: {reason}", entry.name));
                        None
                    }
                };
                if let Some(value) = value.filter(|v| v.is_finite()) {
                    let better = best
                        .as_ref()
                        .is_none_or(|(b, _)| if by.minimize { value < *b } else { value > *b });
                    if better {
                        best = Some((value, entry));
                    }
                }
            }
            if best.is_none() {
                return Err(error(format!(
                    "no valid checkpoint in {} records the metric `{}` (save with --metric {}=VALUE)",
                    dir.display(),
                    by.metric,
                    by.metric
                )));
            }
            best.map(|(_, entry)| entry)
        }
        name => {
            let entry = listed.into_iter().find(|l| l.name == name).ok_or_else(|| {
                error(format!(
                    "no checkpoint named `{name}` in {} (see %checkpoint list)",
                    dir.display()
                ))
            })?;
            if let Err(reason) = &entry.manifest {
                return Err(error(format!(
                    "{name} is not valid: {reason}. `%checkpoint restore latest` uses the newest valid one."
                )));
            }
            Some(entry)
        }
    };
    match chosen {
        Some(entry) => Ok((entry, warnings)),
        None => Err(error(format!(
            "no valid checkpoint in {}{}",
            dir.display(),
            if warnings.is_empty() {
                " (save one with %checkpoint save)".to_owned()
            } else {
                format!(": {}", warnings.join("; "))
            }
        ))),
    }
}

/// Asks before running code from a checkpoint made elsewhere.
fn confirm_origin(manifest: &Manifest, cell: &CellContext, yes: bool) -> Result<(), MagicError> {
    let here = super::save::environment();
    let mut differences = Vec::new();
    for key in ["host", "uid"] {
        if let (Some(theirs), Some(ours)) = (manifest.environment.get(key), here.get(key))
            && theirs != ours
        {
            differences.push(format!("{key} {theirs} (this kernel: {ours})"));
        }
    }
    if differences.is_empty() || yes {
        return Ok(());
    }
    let question = format!(
        "{} was made by {}. Restoring runs its code (item definitions and Serialize/Deserialize impls). Continue? [y/N] ",
        manifest.name,
        differences.join(", ")
    );
    match cell.input(&question, false) {
        Ok(answer) if matches!(answer.trim(), "y" | "Y" | "yes") => Ok(()),
        Ok(_) => Err(error("restore cancelled; nothing was changed")),
        Err(_) => Err(error(format!(
            "{} comes from another machine or user ({}); restoring it runs its code. Re-run with --yes to trust it.",
            manifest.name,
            differences.join(", ")
        ))),
    }
}

#[derive(Default)]
pub struct Report {
    pub name: String,
    pub restored: Vec<(String, String)>,
    pub failed: Vec<(String, String)>,
    pub skipped: Vec<(String, String)>,
    pub files: Vec<String>,
    pub notes: Vec<String>,
}

fn let_statement(name: &str, ty: &str, path: &Path) -> String {
    format!(
        "let mut {name}: {ty} = ferrolab_checkpoint::load::<{ty}>({:?}).unwrap_or_else(|e| panic!(\"{{}}\", e));",
        path.to_string_lossy()
    )
}

fn failure_text(outcome: &ExecuteOutcome) -> Option<String> {
    match outcome {
        ExecuteOutcome::Error(error) => Some(error.evalue.lines().next().unwrap_or("").to_owned()),
        _ => None,
    }
}

/// Dependencies and items from the checkpoint's journal that this session
/// lacks, in as few cells as names allow.
fn replay_definitions(
    engine: &Engine,
    state: &mut CheckpointState,
    cell: &CellContext,
    checkpoint: &Path,
    report: &mut Report,
) -> Result<(), MagicError> {
    let text =
        std::fs::read_to_string(checkpoint.join("session/journal.jsonl")).unwrap_or_default();
    let cells: Vec<String> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|v| v["code"].as_str().map(str::to_owned))
        .collect();
    let known_deps: BTreeSet<String> = state
        .journal
        .iter()
        .flat_map(|e| journal::definitions(&e.code).deps)
        .collect();
    let defined: BTreeSet<String> = engine.item_names().into_iter().collect();
    let mut deps: Vec<String> = Vec::new();
    let mut batches: Vec<String> = vec![String::new()];
    let mut batch_names: BTreeSet<String> = BTreeSet::new();
    let mut replayed: BTreeSet<String> = BTreeSet::new();
    for code in &cells {
        let found = journal::definitions(code);
        for dep in &found.deps {
            if !known_deps.contains(dep) && !deps.contains(dep) {
                deps.push(dep.clone());
            }
        }
        let missing: Vec<&str> = found.names().filter(|n| !defined.contains(*n)).collect();
        if missing.is_empty()
            && found
                .items
                .iter()
                .all(|i| !matches!(i.kind, ItemKind::Impl(_)))
        {
            continue;
        }
        if missing.iter().any(|n| batch_names.contains(*n)) {
            batches.push(String::new());
            batch_names.clear();
        }
        let mut chunk = String::new();
        for item in &found.items {
            let include = match &item.kind {
                ItemKind::Named(name) => !defined.contains(name),
                ItemKind::Impl(target) => {
                    replayed.contains(target) || missing.contains(&target.as_str())
                }
                ItemKind::Use => !missing.is_empty(),
            };
            if include {
                chunk.push_str(&item.source);
                chunk.push('\n');
            }
        }
        for name in missing {
            batch_names.insert(name.to_owned());
            replayed.insert(name.to_owned());
        }
        if let Some(last) = batches.last_mut() {
            last.push_str(&chunk);
        }
    }
    if !deps.is_empty() || !state.runtime_loaded {
        if !deps.is_empty() {
            let risky = runtime::at_risk(engine);
            if !risky.is_empty() {
                let names: Vec<&str> = risky.iter().map(|(n, _)| n.as_str()).collect();
                return Err(error(format!(
                    "the checkpoint needs crates this session lacks ({}), and adding them now would make evcxr drop {}. Restore into a fresh kernel (Kernel → Restart), or add the crates first.",
                    deps.join(", "),
                    names.join(", ")
                )));
            }
        }
        let mut code = deps.join("\n");
        if !state.runtime_loaded {
            code.push('\n');
            code.push_str(&runtime::dep_line()?);
        }
        if let Some(why) = failure_text(&engine.execute(&code, 1, cell)) {
            return Err(error(format!(
                "cannot add the checkpoint's dependencies: {why}"
            )));
        }
        state.runtime_loaded = true;
        if !deps.is_empty() {
            report
                .notes
                .push(format!("dependencies: {}", deps.join(", ")));
            state.journal.push(journal::Entry {
                code: deps.join("\n"),
                unix_time: now_unix(),
            });
        }
    }
    for batch in batches.into_iter().filter(|b| !b.trim().is_empty()) {
        match failure_text(&engine.execute(&batch, 1, cell)) {
            Some(why) => report
                .notes
                .push(format!("some definitions could not be replayed: {why}")),
            None => state.journal.push(journal::Entry {
                code: batch,
                unix_time: now_unix(),
            }),
        }
    }
    if !replayed.is_empty() {
        report.notes.push(format!(
            "definitions replayed: {}",
            replayed.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(())
}

/// Copies `--files` back (to the same relative path under the current
/// directory, or the same absolute path), checking each hash.
fn restore_files(manifest: &Manifest, checkpoint: &Path, report: &mut Report) {
    for file in &manifest.user_files {
        let source = checkpoint.join(&file.stored);
        let target = PathBuf::from(&file.original);
        let result = (|| -> std::io::Result<()> {
            if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            let temp = target.with_file_name(format!(
                ".{}.ferrolab-restore",
                target
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            ));
            std::fs::copy(&source, &temp)?;
            std::fs::File::open(&temp)?.sync_all()?;
            std::fs::rename(&temp, &target)
        })();
        match result {
            Ok(()) => report.files.push(file.original.clone()),
            Err(e) => report
                .notes
                .push(format!("file {} not restored: {e}", file.original)),
        }
    }
}

pub struct Request<'a> {
    pub dir: PathBuf,
    pub which: &'a str,
    pub vars: Option<Vec<String>>,
    pub best_by: Option<BestBy>,
    pub yes: bool,
}

pub fn restore(
    engine: &Engine,
    state: &mut CheckpointState,
    cell: &CellContext,
    request: Request,
) -> Result<Report, MagicError> {
    let (entry, warnings) = choose(&request.dir, request.which, request.best_by.as_ref())?;
    let manifest = entry
        .manifest
        .as_ref()
        .map_err(|e| error(e.clone()))?
        .clone();
    confirm_origin(&manifest, cell, request.yes)?;
    let mut report = Report {
        name: manifest.name.clone(),
        notes: warnings,
        ..Report::default()
    };
    if let Some(wanted) = &request.vars {
        let unknown: Vec<&String> = wanted
            .iter()
            .filter(|n| !manifest.variables.iter().any(|v| &v.name == *n))
            .collect();
        if !unknown.is_empty() {
            return Err(MagicError::usage(format!(
                "{} has no variable {}",
                manifest.name,
                unknown
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let chosen: Vec<_> = manifest
        .variables
        .iter()
        .filter(|v| request.vars.as_ref().is_none_or(|w| w.contains(&v.name)))
        .collect();
    for variable in chosen.iter().filter(|v| v.status != Status::Saved) {
        report.skipped.push((
            variable.name.clone(),
            format!(
                "not in the checkpoint: {}",
                variable.reason.clone().unwrap_or_default()
            ),
        ));
    }
    let saved: Vec<_> = chosen
        .iter()
        .filter(|v| v.status == Status::Saved && v.file.is_some())
        .collect();
    replay_definitions(engine, state, cell, &entry.path, &mut report)?;
    if !saved.is_empty() {
        let lets: Vec<(String, String, String)> = saved
            .iter()
            .map(|v| {
                let path = entry.path.join(v.file.as_deref().unwrap_or_default());
                (
                    v.name.clone(),
                    v.ty.clone(),
                    let_statement(&v.name, &v.ty, &path),
                )
            })
            .collect();
        let all: String = lets
            .iter()
            .map(|(_, _, code)| code.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        if failure_text(&engine.execute(&all, 1, cell)).is_none() {
            report
                .restored
                .extend(lets.iter().map(|(name, ty, _)| (name.clone(), ty.clone())));
        } else {
            for (name, ty, code) in &lets {
                match failure_text(&engine.execute(code, 1, cell)) {
                    None => report.restored.push((name.clone(), ty.clone())),
                    Some(why) => report.failed.push((name.clone(), why)),
                }
            }
        }
    }
    restore_files(&manifest, &entry.path, &mut report);
    state.restored_from = Some(entry.path.clone());
    Ok(report)
}
