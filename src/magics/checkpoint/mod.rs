//! `%checkpoint`: save the session's variables, definitions and files so that
//! a crash, an interrupt or a new VM costs minutes instead of hours.
//!
//! The format and commit protocol live in the `ferrolab-checkpoint` crate,
//! which the session also uses. This module parses the commands, and gives
//! the cell router its hooks: journal successful Rust code, load the runtime
//! with the user's first `:dep`, auto-save at cell boundaries, and name the
//! newest checkpoint when variables are lost.

mod in_cell;
pub mod journal;
mod listing;
mod restore;
mod retention;
mod runtime;
mod save;
pub mod state;

pub use state::CheckpointState;

use super::args;
use super::{Call, Kind, Magic, MagicError, MagicResult, text_result};
use crate::engine::Engine;
use crate::kernel::{CellContext, ExecuteOutcome, StreamName};
use clap::{Parser, Subcommand};
use ferrolab_checkpoint::commit;
use ferrolab_checkpoint::manifest::{self, Depth};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub fn magics() -> Vec<Magic> {
    vec![Magic {
        name: "checkpoint",
        kind: Kind::Line,
        summary: "save and restore variables, definitions and files (crash-safe)",
        help: HELP,
        run: checkpoint,
    }]
}

const HELP: &str = "\
%checkpoint save [NAME] [--vars a,b | --exclude c] [--files PATH...] [--metric k=v] [--dir DIR]
%checkpoint list                     name, time, age, size, variables, metrics, valid?
%checkpoint restore [latest | best | NAME] [--vars a,b] [--metric loss:min] [--yes]
%checkpoint verify [NAME]            re-hash every file
%checkpoint status                   destination, last good checkpoint, what is NOT covered
%checkpoint auto --every 10m [--keep N] [--keep-best METRIC:min|max:K] [--dir DIR]
%checkpoint auto off
%checkpoint rm NAME
%checkpoint init                     add the checkpoint runtime now (put it in the first cell)

Saves every variable whose type implements serde::Serialize (streamed to disk as
MessagePack; the others are listed as skipped, with the reason), the :dep lines,
Cargo.lock, the items (fns, structs, impls, use) and a journal of the cells that
ran, the files given with --files, and the kernel/rustc/GPU environment.
Everything is hashed in MANIFEST.json, written last: a save cut short by a crash,
a full disk or an interrupt never replaces the previous good checkpoint.

Directory: --dir, else $FERROLAB_CHECKPOINT_DIR, else ./checkpoints. Put it on a
mounted drive to survive the VM.

Restore works in the same kernel after a crash, or in a fresh kernel anywhere:
dependencies, then definitions, then `let` with the saved type, then files.

Inside a long loop:  ferrolab::checkpoint!(epoch, model; loss = val_loss);
saves at most once per --every (default 10m); ferrolab::checkpoint_now!(..)
always saves.

Example:
    %checkpoint auto --every 10m --keep 3 --keep-best loss:min:1
    %checkpoint save --metric loss=0.12 --files weights.bin
    %checkpoint restore latest";

#[derive(Parser, Debug)]
#[command(name = "%checkpoint", disable_help_subcommand = true)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Save now.
    Save {
        /// A label added to the checkpoint's name.
        name: Option<String>,
        #[arg(long, value_delimiter = ',')]
        vars: Option<Vec<String>>,
        #[arg(long, value_delimiter = ',')]
        exclude: Vec<String>,
        #[arg(long, num_args = 1..)]
        files: Vec<String>,
        #[arg(long = "metric")]
        metrics: Vec<String>,
        #[arg(long)]
        dir: Option<String>,
    },
    List {
        #[arg(long)]
        dir: Option<String>,
    },
    Restore {
        #[arg(default_value = "latest")]
        which: String,
        #[arg(long, value_delimiter = ',')]
        vars: Option<Vec<String>>,
        /// For `best`: METRIC:min or METRIC:max.
        #[arg(long)]
        metric: Option<String>,
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        dir: Option<String>,
    },
    Verify {
        name: Option<String>,
        #[arg(long)]
        dir: Option<String>,
    },
    Status {
        #[arg(long)]
        dir: Option<String>,
    },
    Auto {
        /// `off` turns auto-saving off.
        off: Option<String>,
        #[arg(long)]
        every: Option<String>,
        #[arg(long)]
        keep: Option<usize>,
        #[arg(long = "keep-best")]
        keep_best: Option<String>,
        #[arg(long)]
        dir: Option<String>,
    },
    Rm {
        name: String,
        #[arg(long)]
        dir: Option<String>,
    },
    Init,
}

fn expand(dir: Option<String>) -> Result<Option<String>, MagicError> {
    dir.map(|d| args::expand_path(&d)).transpose()
}

fn parse_metric(text: &str) -> Result<(String, f64), MagicError> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| MagicError::usage(format!("--metric {text}: expected NAME=NUMBER")))?;
    let value: f64 = value
        .trim()
        .parse()
        .map_err(|_| MagicError::usage(format!("--metric {text}: `{value}` is not a number")))?;
    Ok((key.trim().to_owned(), value))
}

fn parse_direction(text: &str) -> Result<(String, bool), MagicError> {
    let (metric, direction) = text
        .rsplit_once(':')
        .ok_or_else(|| MagicError::usage(format!("`{text}`: expected METRIC:min or METRIC:max")))?;
    match direction {
        "min" => Ok((metric.to_owned(), true)),
        "max" => Ok((metric.to_owned(), false)),
        other => Err(MagicError::usage(format!(
            "`{other}` is neither min nor max (in `{text}`)"
        ))),
    }
}

fn parse_keep_best(text: &str) -> Result<state::KeepBest, MagicError> {
    let (rest, count) = text.rsplit_once(':').ok_or_else(|| {
        MagicError::usage(format!("--keep-best {text}: expected METRIC:min|max:K"))
    })?;
    let count: usize = count
        .parse()
        .map_err(|_| MagicError::usage(format!("--keep-best {text}: `{count}` is not a count")))?;
    let (metric, minimize) = parse_direction(rest)?;
    Ok(state::KeepBest {
        metric,
        minimize,
        count,
    })
}

fn valid_label(label: &str) -> Result<(), MagicError> {
    let ok = !label.is_empty()
        && label.len() <= 64
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !label.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(MagicError::usage(format!(
            "checkpoint name `{label}`: use letters, digits, '-', '_' and '.' (up to 64)"
        )))
    }
}

fn checkpoint(call: &mut Call) -> MagicResult {
    let parsed: Args = args::parse("checkpoint", call.args)?;
    let state = &mut call.state.checkpoint;
    match parsed.command {
        Command::Save {
            name,
            vars,
            exclude,
            files,
            metrics,
            dir,
        } => {
            if let Some(label) = &name {
                valid_label(label)?;
            }
            let metrics = metrics
                .iter()
                .map(|m| parse_metric(m))
                .collect::<Result<BTreeMap<_, _>, _>>()?;
            let files = files
                .iter()
                .map(|f| args::expand_path(f))
                .collect::<Result<Vec<_>, _>>()?;
            let dir = state.dir(expand(dir)?.as_deref());
            let saved = save::save(
                call.engine,
                state,
                call.cell,
                save::Request {
                    dir,
                    label: name,
                    vars,
                    exclude,
                    files,
                    metrics,
                    origin: "manual",
                },
            )?;
            Ok(text_result(listing::saved_summary(&saved)))
        }
        Command::List { dir } => {
            let dir = state.dir(expand(dir)?.as_deref());
            let depth = listing::depth_for_listing(&dir);
            let listed = commit::list(&dir, depth).map_err(|e| {
                MagicError::new(
                    "CheckpointError",
                    format!("cannot read {}: {e}", dir.display()),
                )
            })?;
            if listed.is_empty() {
                return Ok(text_result(format!(
                    "No checkpoints in {} yet (%checkpoint save makes one).",
                    dir.display()
                )));
            }
            for entry in listed.iter().filter(|l| !l.is_valid()) {
                call.cell.stream(
                    StreamName::Stderr,
                    &format!(
                        "warning: {} is not a valid checkpoint and is ignored: {}\n",
                        entry.name,
                        entry.manifest.as_ref().err().cloned().unwrap_or_default()
                    ),
                );
            }
            Ok(Some(listing::list_table(&dir, &listed, depth)))
        }
        Command::Restore {
            which,
            vars,
            metric,
            yes,
            dir,
        } => {
            let dir = state.dir(expand(dir)?.as_deref());
            let best_by = match metric {
                Some(text) => {
                    let (metric, minimize) = parse_direction(&text)?;
                    Some(restore::BestBy { metric, minimize })
                }
                None => state.retention.keep_best.as_ref().map(|b| restore::BestBy {
                    metric: b.metric.clone(),
                    minimize: b.minimize,
                }),
            };
            let report = restore::restore(
                call.engine,
                state,
                call.cell,
                restore::Request {
                    dir,
                    which: &which,
                    vars,
                    best_by,
                    yes,
                },
            )?;
            let text = listing::restore_summary(&report);
            if report.failed.is_empty() {
                Ok(text_result(text))
            } else {
                let names: Vec<&str> = report.failed.iter().map(|(n, _)| n.as_str()).collect();
                let mut error = MagicError::new(
                    "RestoreIncomplete",
                    format!(
                        "could not restore {}; the others were restored",
                        names.join(", ")
                    ),
                );
                error.traceback.extend(text.lines().map(str::to_owned));
                Err(error)
            }
        }
        Command::Verify { name, dir } => verify(call, name, expand(dir)?),
        Command::Status { dir } => status(call, expand(dir)?),
        Command::Auto {
            off,
            every,
            keep,
            keep_best,
            dir,
        } => {
            match off.as_deref() {
                Some("off") => {
                    state.auto = None;
                    state.retention = state::Retention::default();
                    return Ok(text_result("Auto-checkpointing is off."));
                }
                Some(other) => {
                    return Err(MagicError::usage(format!(
                        "unexpected `{other}`: use `%checkpoint auto --every 10m` or `%checkpoint auto off`"
                    )));
                }
                None => {}
            }
            let every = every.ok_or_else(|| {
                MagicError::usage("%checkpoint auto needs --every (e.g. --every 10m), or `off`")
            })?;
            let every: Duration = humantime::parse_duration(&every).map_err(|e| {
                MagicError::usage(format!("--every {every}: {e} (examples: 30s, 10m, 1h)"))
            })?;
            state.retention = state::Retention {
                keep,
                keep_best: keep_best.as_deref().map(parse_keep_best).transpose()?,
            };
            let dir = expand(dir)?.map(PathBuf::from);
            state.auto = Some(state::Auto {
                every,
                dir: dir.map(|d| state.dir(Some(&d.to_string_lossy()))),
            });
            runtime::ensure(call.engine, state, call.cell)?;
            let mut text = format!(
                "Auto-checkpointing to {} after a successful cell once {} have passed",
                state.dir(None).display(),
                humantime::format_duration(every)
            );
            if let Some(keep) = keep {
                text.push_str(&format!("; keeping the newest {keep}"));
            }
            if let Some(best) = &state.retention.keep_best {
                text.push_str(&format!(
                    " and the {} best by {} ({})",
                    best.count,
                    best.metric,
                    if best.minimize { "lowest" } else { "highest" }
                ));
            }
            text.push_str(". Inside long loops use ferrolab::checkpoint!(..).");
            Ok(text_result(text))
        }
        Command::Rm { name, dir } => {
            let dir = state.dir(expand(dir)?.as_deref());
            let path = dir.join(&name);
            let ours = name.starts_with(commit::PREFIX)
                && !name.contains('/')
                && path.is_dir()
                && (manifest::read(&path).is_ok() || path.join("vars").is_dir());
            if !ours {
                return Err(MagicError::usage(format!(
                    "no checkpoint named `{name}` in {} (see %checkpoint list)",
                    dir.display()
                )));
            }
            commit::remove(&path).map_err(|e| {
                MagicError::new("CheckpointError", format!("cannot remove {name}: {e}"))
            })?;
            Ok(text_result(format!("Removed {name}.")))
        }
        Command::Init => {
            runtime::ensure(call.engine, state, call.cell)?;
            Ok(text_result(
                "The checkpoint runtime is loaded: %checkpoint save and ferrolab::checkpoint!(..) are ready.",
            ))
        }
    }
}

fn verify(call: &mut Call, name: Option<String>, dir: Option<String>) -> MagicResult {
    let state = &call.state.checkpoint;
    let dir = state.dir(dir.as_deref());
    let listed = commit::list(&dir, Depth::Sizes).map_err(|e| {
        MagicError::new(
            "CheckpointError",
            format!("cannot read {}: {e}", dir.display()),
        )
    })?;
    let target = match &name {
        Some(name) => listed
            .into_iter()
            .find(|l| &l.name == name)
            .ok_or_else(|| {
                MagicError::usage(format!("no checkpoint named `{name}` in {}", dir.display()))
            })?,
        None => listed
            .into_iter()
            .next_back()
            .ok_or_else(|| MagicError::usage(format!("no checkpoints in {}", dir.display())))?,
    };
    let problems = match manifest::read(&target.path) {
        Ok(manifest) => manifest::check(&target.path, &manifest, Depth::Hashes)
            .into_iter()
            .collect::<Vec<_>>(),
        Err(reason) => vec![reason],
    };
    if problems.is_empty() {
        let manifest =
            manifest::read(&target.path).map_err(|e| MagicError::new("CheckpointError", e))?;
        Ok(text_result(format!(
            "{} is valid: {} files, {}, every SHA-256 matches.",
            target.name,
            manifest.files.len(),
            listing::human_size(manifest.total_size())
        )))
    } else {
        let mut error = MagicError::new(
            "CheckpointInvalid",
            format!("{} is not valid: {}", target.name, problems.join("; ")),
        );
        error.traceback.push(
            "`%checkpoint restore latest` skips it and uses the newest valid checkpoint.".into(),
        );
        Err(error)
    }
}

fn status(call: &mut Call, dir: Option<String>) -> MagicResult {
    let dir = call.state.checkpoint.dir(dir.as_deref());
    let mut lines = vec![format!("Destination: {}", dir.display())];
    let listed = commit::list(&dir, Depth::Sizes).unwrap_or_default();
    match listed.iter().rev().find(|l| l.is_valid()) {
        Some(entry) => {
            let m = entry.manifest.as_ref().ok();
            lines.push(format!(
                "Last good checkpoint: {} ({}, {} variables)",
                entry.name,
                m.map(|m| listing::human_age(save::now_unix() - m.created_unix))
                    .unwrap_or_default(),
                m.map(|m| m.saved().count()).unwrap_or(0)
            ));
        }
        None => lines.push("Last good checkpoint: none yet".into()),
    }
    let invalid: Vec<&str> = listed
        .iter()
        .filter(|l| !l.is_valid())
        .map(|l| l.name.as_str())
        .collect();
    if !invalid.is_empty() {
        lines.push(format!("Invalid (ignored): {}", invalid.join(", ")));
    }
    let state = &mut call.state.checkpoint;
    lines.push(match &state.auto {
        Some(auto) => format!(
            "Auto: every {} at cell boundaries{}",
            humantime::format_duration(auto.every),
            state
                .retention
                .keep
                .map(|k| format!(", keeping {k}"))
                .unwrap_or_default()
        ),
        None => "Auto: off (%checkpoint auto --every 10m)".into(),
    });
    let vars = save::selected_variables(call.engine, None, &[])?;
    if vars.is_empty() {
        lines.push("Variables: none defined".into());
    } else {
        match save::run_variables(call.engine, state, call.cell, None, &vars) {
            Ok(report) => {
                let covered: Vec<&str> = report.saved().map(|v| v.name.as_str()).collect();
                lines.push(format!(
                    "Covered: {}",
                    if covered.is_empty() {
                        "nothing".into()
                    } else {
                        covered.join(", ")
                    }
                ));
                let missing: Vec<String> = report
                    .variables
                    .iter()
                    .filter(|v| v.status != ferrolab_checkpoint::Status::Saved)
                    .map(|v| {
                        format!(
                            "{}: {} — {}",
                            v.name,
                            v.ty,
                            v.reason.clone().unwrap_or_default()
                        )
                    })
                    .collect();
                if missing.is_empty() {
                    lines.push("NOT covered: nothing".into());
                } else {
                    lines.push("NOT covered:".into());
                    lines.extend(missing.into_iter().map(|m| format!("  {m}")));
                }
            }
            Err(error) => lines.push(format!("Coverage unknown: {}", error.evalue)),
        }
    }
    Ok(text_result(lines.join("\n")))
}

// ---- hooks for the cell router ----

/// Before a Rust segment: the code to run (with the runtime added to the
/// user's first `:dep` cell), or the error that stops the cell.
pub fn before_rust(
    engine: &Engine,
    state: &mut CheckpointState,
    code: &str,
    cell: &CellContext,
) -> Result<(String, bool), ExecuteOutcome> {
    if code.lines().any(|line| line.trim() == ":clear") {
        state.runtime_loaded = false;
        state.journal.clear();
    }
    if let Some(extended) = runtime::piggyback(code, state) {
        return Ok((extended, true));
    }
    let uses_macro = code.contains("checkpoint!") || code.contains("checkpoint_now!");
    if uses_macro && !state.runtime_loaded {
        runtime::ensure(engine, state, cell).map_err(into_outcome)?;
    }
    in_cell::prepare(engine, state);
    Ok((code.to_owned(), false))
}

/// After a Rust segment ran.
pub fn after_rust(state: &mut CheckpointState, code: &str, succeeded: bool, piggybacked: bool) {
    if succeeded {
        if piggybacked {
            state.runtime_loaded = true;
        }
        state.journal.push(journal::Entry {
            code: code.to_owned(),
            unix_time: save::now_unix(),
        });
    }
}

/// After a whole cell: in-cell checkpoints, then an auto-save if one is due.
pub fn after_cell(
    engine: &Engine,
    state: &mut CheckpointState,
    cell: &CellContext,
    succeeded: bool,
) {
    let removed = in_cell::after_cell(state);
    if !removed.is_empty() {
        cell.stream(
            StreamName::Stderr,
            &format!("checkpoint retention removed {}\n", removed.join(", ")),
        );
    }
    let Some(auto) = state.auto.clone() else {
        return;
    };
    let due = state
        .last_commit_unix
        .is_none_or(|last| save::now_unix() - last >= auto.every.as_secs_f64());
    // Nothing to keep yet: no variables (the definitions are in the journal).
    if !succeeded || !due || cell.is_cancelled() || engine.variables().is_empty() {
        return;
    }
    let request = save::Request {
        dir: state.dir(None),
        label: None,
        vars: None,
        exclude: Vec::new(),
        files: Vec::new(),
        metrics: BTreeMap::new(),
        origin: "auto",
    };
    match save::save(engine, state, cell, request) {
        Ok(saved) => cell.stream(
            StreamName::Stderr,
            &format!("[auto] {}\n", listing::saved_summary(&saved)),
        ),
        Err(error) => cell.stream(
            StreamName::Stderr,
            &format!("[auto] checkpoint failed: {}\n", error.evalue),
        ),
    }
}

/// Adds the newest checkpoint to an error that lost variables.
pub fn explain_loss(state: &CheckpointState, outcome: ExecuteOutcome) -> ExecuteOutcome {
    let ExecuteOutcome::Error(mut error) = outcome else {
        return outcome;
    };
    if matches!(error.ename.as_str(), "Interrupted" | "RuntimeCrashed")
        && let Some((_, names)) = error.evalue.split_once("lost variables: ")
    {
        let lost: Vec<String> = names.split(", ").map(|n| n.trim().to_owned()).collect();
        error.traceback.push(listing::lost_state_hint(state, &lost));
    }
    ExecuteOutcome::Error(error)
}

fn into_outcome(error: MagicError) -> ExecuteOutcome {
    ExecuteOutcome::error(&error.ename, error.evalue, error.traceback)
}
