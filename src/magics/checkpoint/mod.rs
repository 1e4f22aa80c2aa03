//! `%checkpoint`: save the session's variables, definitions and files so that
//! a crash, an interrupt or a new VM costs minutes instead of hours.
//!
//! The format and commit protocol live in the `ferrolab-checkpoint` crate,
//! which the session also uses. This module parses the commands, and gives
//! the cell router its hooks: journal successful Rust code, load the runtime
//! with the user's first `:dep`, auto-save at cell boundaries, and name the
//! newest checkpoint when variables are lost. Checkpoints live in a folder or
//! in object storage ([`place`]); a restore trusts only what [`trust`] allows.

mod hooks;
mod in_cell;
pub mod journal;
mod listing;
mod place;
mod remote;
mod restore;
mod retention;
mod runtime;
mod save;
mod signature;
pub mod state;
mod trust;
pub mod warmup;

pub use runtime::{CRATE_NAME as RUNTIME_CRATE, dep_line, piggyback, write_build_profile};
pub use state::{CheckpointState, Env};

use super::args;
use super::{Call, ErrorInfo, Kind, Magic, MagicResult, text_result};
use crate::kernel::StreamName;
use clap::{Parser, Subcommand};
use ferrolab_checkpoint::commit;
use ferrolab_checkpoint::manifest::Depth;
use place::Place;
use runtime::Readiness;
use std::collections::BTreeMap;
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
%checkpoint save [NAME] [--vars a,b | --exclude c] [--files PATH|GLOB...] [--metric k=v] [--dir DIR]
%checkpoint list                     name, time, age, size, variables, metrics, valid?
%checkpoint restore [latest | best | NAME] [--vars a,b] [--metric loss:min] [--yes] [--force]
%checkpoint verify [NAME]            re-hash every file
%checkpoint status                   destination, last good checkpoint, what is NOT covered
%checkpoint auto --every 10m [--keep N] [--keep-best METRIC:min|max:K] [--dir DIR]
%checkpoint auto off
%checkpoint rm NAME
%checkpoint init                     (not needed; kept for old notebooks)

Saves every variable whose type implements serde::Serialize (streamed to disk as
MessagePack; the others are listed as skipped, with the reason), the :dep lines,
Cargo.lock, the items (fns, structs, impls, use) and a journal of the cells that
ran, the files given with --files (model weights, say), and the environment.
Everything is hashed in MANIFEST.json, written last: a save cut short by a crash,
a full disk or an interrupt never replaces the previous good checkpoint.
Checkpoints are private to you (folders 0700, files 0600).

Names: `save after50` makes ckpt-000007-after50; restore, verify and rm take
`after50`, `ckpt-000007-after50`, `ckpt-000007` or `7`. When several checkpoints
share a name, the newest wins (list shows them all).

Directory: --dir, else $FERROLAB_CHECKPOINT_DIR, else ./checkpoints. Put it on a
mounted drive, or in object storage (--dir s3://bucket/prefix; AWS_* credentials
or ~/.aws, AWS_ENDPOINT_URL for MinIO, R2 or GCS), to survive the VM.

Restore works in the same kernel after a crash, or in a fresh kernel anywhere:
dependencies, then definitions, then variables (each loaded aside first: one that
no longer fits its type fails alone and your current value stays), then files
(an existing file with other contents is replaced only after a yes, or --force).
A checkpoint that is not your own (its folder or files belong to another user or
are writable by others; in object storage, not signed with your checkpoint key)
shows the code it would run and asks first (or needs --yes).

Inside a long loop:  ferrolab::checkpoint!(epoch, model; loss = val_loss);
saves at most once per --every (default 10m); ferrolab::checkpoint_now!(..)
always saves; add `; files = [\"model.safetensors\"]` to include weights.

Example:
    %checkpoint auto --every 10m --keep 3 --keep-best loss:min:1
    %checkpoint save after50 --metric loss=0.12 --files 'weights/*.safetensors'
    %checkpoint restore after50";

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
        /// Replace existing files whose contents differ without asking.
        #[arg(long)]
        force: bool,
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

fn expand(dir: Option<String>) -> Result<Option<String>, ErrorInfo> {
    dir.map(|d| args::expand_path(&d)).transpose()
}

fn parse_metric(text: &str) -> Result<(String, f64), ErrorInfo> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| ErrorInfo::usage(format!("--metric {text}: expected NAME=NUMBER")))?;
    let value: f64 = value
        .trim()
        .parse()
        .map_err(|_| ErrorInfo::usage(format!("--metric {text}: `{value}` is not a number")))?;
    Ok((key.trim().to_owned(), value))
}

fn parse_direction(text: &str) -> Result<(String, bool), ErrorInfo> {
    let (metric, direction) = text
        .rsplit_once(':')
        .ok_or_else(|| ErrorInfo::usage(format!("`{text}`: expected METRIC:min or METRIC:max")))?;
    match direction {
        "min" => Ok((metric.to_owned(), true)),
        "max" => Ok((metric.to_owned(), false)),
        other => Err(ErrorInfo::usage(format!(
            "`{other}` is neither min nor max (in `{text}`)"
        ))),
    }
}

fn parse_keep_best(text: &str) -> Result<state::KeepBest, ErrorInfo> {
    let (rest, count) = text.rsplit_once(':').ok_or_else(|| {
        ErrorInfo::usage(format!("--keep-best {text}: expected METRIC:min|max:K"))
    })?;
    let count: usize = count
        .parse()
        .map_err(|_| ErrorInfo::usage(format!("--keep-best {text}: `{count}` is not a count")))?;
    let (metric, minimize) = parse_direction(rest)?;
    Ok(state::KeepBest {
        metric,
        minimize,
        count,
    })
}

fn checkpoint_error(message: impl Into<String>) -> ErrorInfo {
    ErrorInfo::new("CheckpointError", message)
}

fn checkpoint(call: &mut Call) -> MagicResult {
    let parsed: Args = args::parse("checkpoint", call.args)?;
    match parsed.command {
        Command::Save {
            name,
            vars,
            exclude,
            files,
            metrics,
            dir,
        } => {
            if let Some(problem) = name.as_deref().and_then(commit::label_problem) {
                return Err(ErrorInfo::usage(problem));
            }
            let metrics = metrics
                .iter()
                .map(|m| parse_metric(m))
                .collect::<Result<BTreeMap<_, _>, _>>()?;
            let files = files
                .iter()
                .map(|f| args::expand_path(f))
                .collect::<Result<Vec<_>, _>>()?;
            let env = call.state.environment();
            let state = &mut call.state.checkpoint;
            let place = state.place(expand(dir)?.as_deref(), &env)?;
            let saved = save::save(
                call.engine,
                state,
                call.cell,
                save::Request {
                    place,
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
        Command::List { dir } => list(call, expand(dir)?),
        Command::Restore {
            which,
            vars,
            metric,
            yes,
            force,
            dir,
        } => {
            let env = call.state.environment();
            let state = &mut call.state.checkpoint;
            let place = state.place(expand(dir)?.as_deref(), &env)?;
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
                    place,
                    which: &which,
                    vars,
                    best_by,
                    yes,
                    force,
                },
            )?;
            let text = listing::restore_summary(&report);
            if report.failed.is_empty() {
                Ok(text_result(text))
            } else {
                let names: Vec<&str> = report.failed.iter().map(|(n, _)| n.as_str()).collect();
                let mut error = ErrorInfo::new(
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
            let env = call.state.environment();
            let state = &mut call.state.checkpoint;
            match off.as_deref() {
                Some("off") => {
                    state.auto = None;
                    state.retention = state::Retention::default();
                    return Ok(text_result("Auto-checkpointing is off."));
                }
                Some(other) => {
                    return Err(ErrorInfo::usage(format!(
                        "unexpected `{other}`: use `%checkpoint auto --every 10m` or `%checkpoint auto off`"
                    )));
                }
                None => {}
            }
            let every = every.ok_or_else(|| {
                ErrorInfo::usage("%checkpoint auto needs --every (e.g. --every 10m), or `off`")
            })?;
            let every: Duration = humantime::parse_duration(&every).map_err(|e| {
                ErrorInfo::usage(format!("--every {every}: {e} (examples: 30s, 10m, 1h)"))
            })?;
            let retention = state::Retention {
                keep,
                keep_best: keep_best.as_deref().map(parse_keep_best).transpose()?,
            };
            // Checked now, so a typo in --dir is an error here, not at the first save.
            let dir = match expand(dir)? {
                Some(dir) => Some(
                    Place::parse(&dir, &env)
                        .map_err(checkpoint_error)?
                        .describe(),
                ),
                None => None,
            };
            state.retention = retention;
            state.auto = Some(state::Auto { every, dir });
            let readiness = runtime::ensure(call.engine, state, call.cell)?;
            let mut text = format!(
                "Auto-checkpointing to {} after a successful cell once {} have passed",
                state.destination(None, &env),
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
            if let Readiness::WouldDrop(risky) = readiness {
                text.push_str(&format!("\nNote: {}.", Readiness::why_not(&risky)));
            }
            Ok(text_result(text))
        }
        Command::Rm { name, dir } => {
            let env = call.state.environment();
            let place = call.state.checkpoint.place(expand(dir)?.as_deref(), &env)?;
            let listed = place
                .list(Depth::Sizes, &|| call.cell.is_cancelled())
                .map_err(checkpoint_error)?;
            let (entry, warnings) = restore::find(listed, &name, &place.describe())?;
            for warning in warnings {
                call.cell
                    .stream(StreamName::Stderr, &format!("note: {warning}\n"));
            }
            place.remove(&entry).map_err(checkpoint_error)?;
            Ok(text_result(format!("Removed {}.", entry.name)))
        }
        Command::Init => {
            let state = &mut call.state.checkpoint;
            match runtime::ensure(call.engine, state, call.cell)? {
                Readiness::Loaded => Ok(text_result(
                    "The checkpoint runtime is loaded: %checkpoint save and ferrolab::checkpoint!(..) are ready. (This command is no longer needed: saves load it themselves.)",
                )),
                Readiness::WouldDrop(risky) => Ok(text_result(format!(
                    "The checkpoint runtime was not added: {}.",
                    Readiness::why_not(&risky)
                ))),
            }
        }
    }
}

fn list(call: &mut Call, dir: Option<String>) -> MagicResult {
    let env = call.state.environment();
    let place = call.state.checkpoint.place(dir.as_deref(), &env)?;
    let depth = match &place {
        Place::Local(dir) => listing::depth_for_listing(dir),
        Place::Remote(_) => Depth::Sizes,
    };
    let listed = place
        .list(depth, &|| call.cell.is_cancelled())
        .map_err(checkpoint_error)?;
    if let Place::Remote(remote) = &place {
        let pending = remote.pending();
        if !pending.is_empty() {
            call.cell.stream(
                StreamName::Stderr,
                &format!(
                    "note: {} saved on this machine, not uploaded yet (the next save or restore retries)\n",
                    pending.join(", ")
                ),
            );
        }
    }
    if listed.is_empty() {
        return Ok(text_result(format!(
            "No checkpoints in {} yet (%checkpoint save makes one).",
            place.describe()
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
    Ok(Some(listing::list_table(&place.describe(), &listed, depth)))
}

fn verify(call: &mut Call, name: Option<String>, dir: Option<String>) -> MagicResult {
    let env = call.state.environment();
    let place = call.state.checkpoint.place(dir.as_deref(), &env)?;
    let cell = call.cell;
    let interrupted = |what: &str| ErrorInfo::new("Interrupted", format!("{what} was interrupted"));
    let listed = place.list(Depth::Sizes, &|| cell.is_cancelled());
    if cell.is_cancelled() {
        return Err(interrupted("verifying"));
    }
    let listed = listed.map_err(checkpoint_error)?;
    let target = match &name {
        Some(name) => {
            let (entry, warnings) = restore::find(listed, name, &place.describe())?;
            for warning in warnings {
                cell.stream(StreamName::Stderr, &format!("note: {warning}\n"));
            }
            entry
        }
        None => listed
            .into_iter()
            .next_back()
            .ok_or_else(|| ErrorInfo::usage(format!("no checkpoints in {}", place.describe())))?,
    };
    let checked = match &target.manifest {
        Err(reason) => Err(reason.clone()),
        Ok(manifest) => match &place {
            Place::Local(_) => {
                let problems = ferrolab_checkpoint::manifest::check(
                    &target.path,
                    manifest,
                    Depth::Hashes,
                    &|| cell.is_cancelled(),
                );
                if problems.is_empty() {
                    Ok(manifest.clone())
                } else {
                    Err(problems.join("; "))
                }
            }
            // Downloading checks every hash on the way.
            Place::Remote(_) => place.open(&target, cell).map(|_| manifest.clone()),
        },
    };
    if cell.is_cancelled() {
        return Err(interrupted(&format!("verifying {}", target.name)));
    }
    match checked {
        Ok(manifest) => Ok(text_result(format!(
            "{} is valid: {} files, {}, every SHA-256 matches.",
            target.name,
            manifest.files.len(),
            listing::human_size(manifest.total_size())
        ))),
        Err(problems) => {
            let mut error = ErrorInfo::new(
                "CheckpointInvalid",
                format!("{} is not valid: {problems}", target.name),
            );
            error.traceback.push(
                "`%checkpoint restore latest` skips it and uses the newest valid checkpoint."
                    .into(),
            );
            Err(error)
        }
    }
}

fn status(call: &mut Call, dir: Option<String>) -> MagicResult {
    let env = call.state.environment();
    let place = call.state.checkpoint.place(dir.as_deref(), &env)?;
    let mut lines = vec![format!("Destination: {}", place.describe())];
    let listed = place
        .list(Depth::Sizes, &|| call.cell.is_cancelled())
        .unwrap_or_default();
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
