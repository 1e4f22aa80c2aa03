//! `%checkpoint restore`: pick a valid checkpoint, then dependencies, items,
//! variables and files, reporting per variable.
//!
//! Invariants:
//! - only a checkpoint whose every hash checks is used (`latest` falls back
//!   past invalid ones, naming them); a name resolves as `%checkpoint list`
//!   shows it (see `commit::resolve`);
//! - nothing from a checkpoint that is not the user's own runs without a
//!   yes: the `:dep` lines and item definitions it would replay are shown
//!   first (`path =` and `git =` dependencies are shown for every checkpoint);
//! - a saved type is used only if it parses as one type (see `trust`);
//! - a variable is loaded into a slot of its own and bound to its name only
//!   once the load succeeded, so a failed restore keeps what the user had;
//! - files go back under the current directory only, and an existing file
//!   with other contents is replaced only after a yes or with `--force`.

use super::journal::{self, ItemKind};
use super::place::{Opened, Place};
use super::runtime;
use super::save::now_unix;
use super::state::CheckpointState;
use super::trust;
use crate::engine::Engine;
use crate::kernel::{CellContext, ExecuteOutcome, StreamName};
use crate::magics::ErrorInfo;
use ferrolab_checkpoint::commit::{self, Listed, Resolution};
use ferrolab_checkpoint::manifest::Depth;
use ferrolab_checkpoint::{Manifest, Status, Variable};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn error(message: impl Into<String>) -> ErrorInfo {
    ErrorInfo::new("CheckpointError", message)
}

/// `best` needs to know which metric and which direction.
pub struct BestBy {
    pub metric: String,
    pub minimize: bool,
}

/// The checkpoint `typed` names among `listed` (oldest first): the full
/// name, the number, or the name given at save time. Warnings say which
/// others share the name or were skipped.
pub fn find(
    listed: Vec<Listed>,
    typed: &str,
    place: &str,
) -> Result<(Listed, Vec<String>), ErrorInfo> {
    let mut warnings = Vec::new();
    let index = match commit::resolve(&listed, typed) {
        Resolution::Found(index) => index,
        Resolution::Newest(index, count) => {
            warnings.push(format!(
                "{count} checkpoints are named `{typed}`; using the newest, {}",
                listed[index].name
            ));
            index
        }
        Resolution::NotFound => {
            let names: Vec<&str> = listed.iter().map(|l| l.name.as_str()).collect();
            return Err(error(format!(
                "no checkpoint named `{typed}` in {place}{}",
                if names.is_empty() {
                    " (there are none yet)".to_owned()
                } else {
                    format!(" (there are: {})", names.join(", "))
                }
            )));
        }
    };
    let entry = listed.into_iter().nth(index).ok_or_else(|| error("lost"))?;
    Ok((entry, warnings))
}

/// Finds the checkpoint to restore; warnings name the invalid ones skipped.
pub fn choose(
    listed: Vec<Listed>,
    which: &str,
    best_by: Option<&BestBy>,
    place: &str,
) -> Result<(Listed, Vec<String>), ErrorInfo> {
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
                ErrorInfo::usage(
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
                    "no valid checkpoint in {place} records the metric `{}` (save with --metric {}=VALUE)",
                    by.metric, by.metric
                )));
            }
            best.map(|(_, entry)| entry)
        }
        typed => {
            let (entry, found_warnings) = find(listed, typed, place)?;
            warnings.extend(found_warnings);
            if let Err(reason) = &entry.manifest {
                return Err(error(format!(
                    "{} is not valid: {reason}. `%checkpoint restore latest` uses the newest valid one.",
                    entry.name
                )));
            }
            Some(entry)
        }
    };
    match chosen {
        Some(entry) => Ok((entry, warnings)),
        None => Err(error(format!(
            "no valid checkpoint in {place}{}",
            if warnings.is_empty() {
                " (save one with %checkpoint save)".to_owned()
            } else {
                format!(": {}", warnings.join("; "))
            }
        ))),
    }
}

/// Asks a yes/no question; no frontend input means no.
fn ask(cell: &CellContext, question: &str) -> Result<bool, ()> {
    match cell.input(question, false) {
        Ok(answer) => Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes")),
        Err(_) => Err(()),
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

/// What restoring definitions would run: new `:dep` lines, and items in as
/// few cells as names allow.
#[derive(Default)]
struct Replay {
    deps: Vec<String>,
    batches: Vec<String>,
    replayed: BTreeSet<String>,
}

impl Replay {
    fn is_empty(&self) -> bool {
        self.deps.is_empty() && self.batches.iter().all(|b| b.trim().is_empty())
    }
}

/// `:dep x = { path = … }` and `git = …` build code from elsewhere (build
/// scripts run at once): shown before they run, whoever made the checkpoint.
fn is_local_or_git_dep(line: &str) -> bool {
    let spec = line.split_once('=').map_or("", |(_, spec)| spec);
    ["path", "git"].iter().any(|key| {
        spec.split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .any(|word| word == *key)
    })
}

fn plan_replay(engine: &Engine, state: &CheckpointState, checkpoint: &Path) -> Replay {
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
    let mut plan = Replay {
        batches: vec![String::new()],
        ..Replay::default()
    };
    let mut batch_names: BTreeSet<String> = BTreeSet::new();
    for code in &cells {
        let found = journal::definitions(code);
        for dep in &found.deps {
            if !known_deps.contains(dep) && !plan.deps.contains(dep) {
                plan.deps.push(dep.clone());
            }
        }
        let missing: Vec<&str> = found.names().filter(|n| !defined.contains(*n)).collect();
        let missing_import = found.imports.iter().any(|n| !defined.contains(n));
        if missing.is_empty()
            && !missing_import
            && found
                .items
                .iter()
                .all(|i| !matches!(i.kind, ItemKind::Impl(_)))
        {
            continue;
        }
        if missing.iter().any(|n| batch_names.contains(*n)) {
            plan.batches.push(String::new());
            batch_names.clear();
        }
        let mut chunk = String::new();
        for item in &found.items {
            let include = match &item.kind {
                ItemKind::Named(name) => !defined.contains(name),
                ItemKind::Impl(target) => {
                    plan.replayed.contains(target) || missing.contains(&target.as_str())
                }
                // An import the session lacks: saved types may name it.
                ItemKind::Use(names) => {
                    !missing.is_empty() || names.iter().any(|n| !defined.contains(n))
                }
            };
            if include {
                chunk.push_str(&item.source);
                chunk.push('\n');
            }
        }
        for name in missing {
            batch_names.insert(name.to_owned());
            plan.replayed.insert(name.to_owned());
        }
        if let Some(last) = plan.batches.last_mut() {
            last.push_str(&chunk);
        }
    }
    plan.batches.retain(|b| !b.trim().is_empty());
    plan
}

/// Shows what a checkpoint would run and gets the user's yes when it is not
/// theirs (or when it builds local or git crates).
fn consent(
    plan: &Replay,
    name: &str,
    origin: &Result<(), String>,
    cell: &CellContext,
    yes: bool,
) -> Result<(), ErrorInfo> {
    if plan.is_empty() {
        return Ok(());
    }
    let mut shown = Vec::new();
    for dep in &plan.deps {
        shown.push(format!("  {dep}"));
    }
    for batch in &plan.batches {
        shown.extend(batch.lines().map(|l| format!("  {l}")));
    }
    let sensitive = plan.deps.iter().any(|d| is_local_or_git_dep(d));
    let Err(why) = origin else {
        if sensitive {
            let lines: Vec<String> = plan
                .deps
                .iter()
                .filter(|d| is_local_or_git_dep(d))
                .map(|d| format!("  {d}\n"))
                .collect();
            cell.stream(
                StreamName::Stderr,
                &format!(
                    "{name} builds crates from a local folder or a git repository:\n{}",
                    lines.concat()
                ),
            );
        }
        return Ok(());
    };
    let listing = format!(
        "{name} is not your own checkpoint: {why}. Restoring it runs this code (build scripts of the crates, the definitions, their Deserialize impls):\n{}",
        shown.join("\n")
    );
    if yes {
        cell.stream(StreamName::Stderr, &format!("{listing}\n(--yes given)\n"));
        return Ok(());
    }
    cell.stream(StreamName::Stderr, &format!("{listing}\n"));
    match ask(cell, "Run it? [y/N] ") {
        Ok(true) => Ok(()),
        Ok(false) => Err(error("restore cancelled; nothing was changed")),
        Err(()) => Err(error(format!(
            "{name} is not your own checkpoint ({why}); restoring it runs the code shown above. Re-run with --yes to trust it; nothing was changed"
        ))),
    }
}

fn failure_text(outcome: &ExecuteOutcome) -> Option<String> {
    match outcome {
        ExecuteOutcome::Error(error) => Some(error.evalue.lines().next().unwrap_or("").to_owned()),
        _ => None,
    }
}

fn run_replay(
    engine: &Engine,
    state: &mut CheckpointState,
    cell: &CellContext,
    plan: Replay,
    report: &mut Report,
) -> Result<(), ErrorInfo> {
    if !plan.deps.is_empty() || !state.runtime_loaded {
        if !plan.deps.is_empty() {
            let risky = runtime::at_risk(engine, state);
            if !risky.is_empty() {
                let names: Vec<&str> = risky.iter().map(|(n, _)| n.as_str()).collect();
                return Err(error(format!(
                    "the checkpoint needs crates this session lacks ({}), and adding them now would make evcxr drop {}. Restore into a fresh kernel (Kernel → Restart), or add the crates first.",
                    plan.deps.join(", "),
                    names.join(", ")
                )));
            }
        }
        let mut code = plan.deps.join("\n");
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
        if !plan.deps.is_empty() {
            report
                .notes
                .push(format!("dependencies: {}", plan.deps.join(", ")));
            state.journal.push(journal::Entry {
                code: plan.deps.join("\n"),
                unix_time: now_unix(),
            });
        }
    }
    for batch in plan.batches {
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
    if !plan.replayed.is_empty() {
        report.notes.push(format!(
            "definitions replayed: {}",
            plan.replayed.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(())
}

/// The slot a variable is loaded into before it replaces the binding.
fn slot(name: &str) -> String {
    format!("__ferrolab_restore_{}", name.trim_start_matches("r#"))
}

fn load_statement(variable: &Variable, file: &Path, report: &Path) -> String {
    let ty = &variable.ty;
    format!(
        "let mut {}: Option<{ty}> = ferrolab_checkpoint::load_slot::<{ty}>({:?}, {:?}, {:?});",
        slot(&variable.name),
        file.to_string_lossy(),
        report.to_string_lossy(),
        variable.name
    )
}

fn bind_statement(variable: &Variable) -> String {
    format!(
        "let mut {}: {} = {}.take().expect(\"checked by ferrolab\");",
        variable.name,
        variable.ty,
        slot(&variable.name)
    )
}

/// Loads every variable into its slot (one cell, or one per variable when
/// that fails to compile), then binds those that loaded.
fn restore_variables(
    engine: &Engine,
    cell: &CellContext,
    dir: &Path,
    variables: &[&Variable],
    report: &mut Report,
) -> Result<(), ErrorInfo> {
    let scratch = tempfile::Builder::new()
        .prefix("ferrolab-restore-")
        .tempdir()
        .map_err(|e| error(format!("cannot create a temporary file: {e}")))?;
    let report_file = scratch.path().join("failures.tsv");
    let statements: Vec<(&Variable, String)> = variables
        .iter()
        .map(|v| {
            let file = dir.join(v.file.as_deref().unwrap_or_default());
            (*v, load_statement(v, &file, &report_file))
        })
        .collect();
    let all: String = statements
        .iter()
        .map(|(_, code)| code.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let mut loaded: Vec<&Variable> = Vec::new();
    if failure_text(&engine.execute(&all, 1, cell)).is_none() {
        loaded.extend(statements.iter().map(|(v, _)| *v));
    } else {
        for (variable, code) in &statements {
            match failure_text(&engine.execute(code, 1, cell)) {
                None => loaded.push(variable),
                Some(why) => report.failed.push((variable.name.clone(), why)),
            }
        }
    }
    let failures = std::fs::read_to_string(&report_file).unwrap_or_default();
    let mut failed_at_load: BTreeSet<String> = BTreeSet::new();
    for line in failures.lines() {
        if let Some((name, why)) = line.split_once('\t') {
            failed_at_load.insert(name.to_owned());
            report.failed.push((
                name.to_owned(),
                format!("{why}; your `{name}` was left as it was"),
            ));
        }
    }
    let to_bind: Vec<&Variable> = loaded
        .into_iter()
        .filter(|v| !failed_at_load.contains(&v.name))
        .collect();
    if to_bind.is_empty() {
        return Ok(());
    }
    let binds: String = to_bind
        .iter()
        .map(|v| bind_statement(v))
        .collect::<Vec<_>>()
        .join("\n");
    match failure_text(&engine.execute(&binds, 1, cell)) {
        None => report
            .restored
            .extend(to_bind.iter().map(|v| (v.name.clone(), v.ty.clone()))),
        Some(why) => {
            for variable in to_bind {
                report.failed.push((variable.name.clone(), why.clone()));
            }
        }
    }
    Ok(())
}

/// Where a saved file goes back: relative paths under the current
/// directory; anything else is refused (the entry is named).
fn restore_target(original: &str) -> Result<PathBuf, String> {
    if original.starts_with('/') {
        return Err("an absolute path, outside the folder a restore writes to".into());
    }
    if !ferrolab_checkpoint::manifest::is_safe_relative(original) {
        return Err("not a plain relative path".into());
    }
    let cwd = std::env::current_dir().map_err(|e| format!("no current directory: {e}"))?;
    Ok(cwd.join(original))
}

fn same_contents(path: &Path, size: u64, sha256: &str) -> bool {
    ferrolab_checkpoint::hash::hash_listed(path, size, &|| false).is_ok_and(|d| d == sha256)
}

/// Copies `--files` back under the current directory, checking each hash.
fn restore_files(
    manifest: &Manifest,
    checkpoint: &Path,
    cell: &CellContext,
    force: bool,
    report: &mut Report,
) {
    let mut ready: Vec<(&str, PathBuf, PathBuf)> = Vec::new();
    let mut differing: Vec<&str> = Vec::new();
    for file in &manifest.user_files {
        let Some(entry) = manifest.files.iter().find(|f| f.path == file.stored) else {
            continue;
        };
        let source = checkpoint.join(&file.stored);
        let target = match restore_target(&file.original) {
            Ok(target) => target,
            Err(why) => {
                report.notes.push(format!(
                    "file {} not restored: {why}; it is in the checkpoint at {}",
                    file.original,
                    source.display()
                ));
                continue;
            }
        };
        if std::fs::symlink_metadata(&target).is_ok() {
            if same_contents(&target, entry.size, &entry.sha256) {
                report.files.push(format!("{} (unchanged)", file.original));
                continue;
            }
            differing.push(&file.original);
        }
        ready.push((&file.original, source, target));
    }
    let overwrite = if differing.is_empty() || force {
        true
    } else {
        let question = format!(
            "These files exist with other contents: {}. Replace them with the checkpoint's? [y/N] ",
            differing.join(", ")
        );
        ask(cell, &question).unwrap_or_default()
    };
    for (original, source, target) in ready {
        if differing.contains(&original) && !overwrite {
            report.notes.push(format!(
                "file {original} not restored: it exists with other contents (re-run with --force to replace it)"
            ));
            continue;
        }
        match copy_into_place(&source, &target) {
            Ok(()) => report.files.push(original.to_owned()),
            Err(e) => report
                .notes
                .push(format!("file {original} not restored: {e}")),
        }
    }
}

/// Copies to a temporary name beside `target`, fsyncs, renames over it.
fn copy_into_place(source: &Path, target: &Path) -> std::io::Result<()> {
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
    let copied = (|| {
        let mut input = std::fs::File::open(source)?;
        let mut output = std::fs::File::create(&temp)?;
        std::io::copy(&mut input, &mut output)?;
        output.sync_all()?;
        std::fs::rename(&temp, target)
    })();
    if copied.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    copied
}

pub struct Request<'a> {
    pub place: Place,
    pub which: &'a str,
    pub vars: Option<Vec<String>>,
    pub best_by: Option<BestBy>,
    pub yes: bool,
    pub force: bool,
}

pub fn restore(
    engine: &Engine,
    state: &mut CheckpointState,
    cell: &CellContext,
    request: Request,
) -> Result<Report, ErrorInfo> {
    let place = &request.place;
    let mut notes = Vec::new();
    if let Place::Remote(remote) = place {
        let (uploaded, failed) = remote.upload_pending(Some(cell));
        if !uploaded.is_empty() {
            notes.push(format!("uploaded first: {}", uploaded.join(", ")));
        }
        if let Some(failed) = failed {
            notes.push(format!("not uploaded yet: {failed}"));
        }
    }
    let depth = if place.is_remote() {
        Depth::Sizes
    } else {
        Depth::Hashes
    };
    let listed = place.list(depth, &|| cell.is_cancelled()).map_err(error)?;
    let (entry, warnings) = choose(
        listed,
        request.which,
        request.best_by.as_ref(),
        &place.describe(),
    )?;
    notes.extend(warnings);
    let Opened { dir, origin } = place.open(&entry, cell).map_err(error)?;
    let manifest = entry
        .manifest
        .as_ref()
        .map_err(|e| error(e.clone()))?
        .clone();
    let mut report = Report {
        name: manifest.name.clone(),
        notes,
        ..Report::default()
    };
    if let Some(wanted) = &request.vars {
        let unknown: Vec<&String> = wanted
            .iter()
            .filter(|n| !manifest.variables.iter().any(|v| &v.name == *n))
            .collect();
        if !unknown.is_empty() {
            return Err(ErrorInfo::usage(format!(
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
    let chosen: Vec<&Variable> = manifest
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
    let mut saved: Vec<&Variable> = Vec::new();
    for variable in chosen
        .into_iter()
        .filter(|v| v.status == Status::Saved && v.file.is_some())
    {
        if trust::is_single_type(&variable.ty) {
            saved.push(variable);
        } else {
            report.failed.push((
                variable.name.clone(),
                format!(
                    "its saved type {:?} is not a plain Rust type; nothing was run for it",
                    variable.ty
                ),
            ));
        }
    }
    let plan = plan_replay(engine, state, &dir);
    consent(&plan, &manifest.name, &origin, cell, request.yes)?;
    run_replay(engine, state, cell, plan, &mut report)?;
    if !saved.is_empty() {
        restore_variables(engine, cell, &dir, &saved, &mut report)?;
    }
    restore_files(&manifest, &dir, cell, request.force, &mut report);
    state.restored_from = Some(entry.name.clone());
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_and_git_dependencies_are_recognised() {
        assert!(is_local_or_git_dep(r#":dep evil = { path = "/tmp/evil" }"#));
        assert!(is_local_or_git_dep(
            r#":dep x = { git = "https://example.com/x" }"#
        ));
        assert!(!is_local_or_git_dep(
            r#":dep serde = { version = "1", features = ["derive"] }"#
        ));
        assert!(!is_local_or_git_dep(":dep pathfinder = \"1\""));
    }

    #[test]
    fn loads_go_to_a_slot_and_bind_only_after() {
        let variable = Variable {
            name: "count".into(),
            ty: "u64".into(),
            status: Status::Saved,
            reason: None,
            file: Some("vars/count.msgpack".into()),
        };
        let load = load_statement(
            &variable,
            Path::new("/c/vars/count.msgpack"),
            Path::new("/r"),
        );
        assert!(load.starts_with("let mut __ferrolab_restore_count: Option<u64> ="));
        assert!(!load.contains("let mut count"));
        assert_eq!(
            bind_statement(&variable),
            "let mut count: u64 = __ferrolab_restore_count.take().expect(\"checked by ferrolab\");"
        );
    }

    #[test]
    fn files_go_back_only_under_the_current_directory() {
        assert!(restore_target("data/notes.txt").is_ok());
        assert!(restore_target("/etc/hostname").is_err());
        assert!(restore_target("../../anywhere").is_err());
    }
}
