//! The engine thread: owns evcxr's `CommandContext` and serves jobs in order.

use super::{
    CellRun, CompletionSet, Hover, Job, Shared, build_cleanup, evcxr_contract, one_compile,
    prelude, render, run_gate, toolchain,
};
use crate::kernel::{CellContext, ExecuteOutcome, StreamName};
use crossbeam_channel::Receiver;
use evcxr::{CommandContext, EvalCallbacks, EvalContext, EvalOutputs};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use sysinfo::{ProcessRefreshKind, System};

const SYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the worker must have had no job to call itself idle.
pub(super) const IDLE_NOTICE: Duration = Duration::from_secs(1);
const RED: &str = "\x1b[1;31m";
const RESET: &str = "\x1b[0m";

struct Worker {
    context: CommandContext,
    shared: Arc<Shared>,
    needs_prelude: bool,
    runtime_pid: Option<u32>,
    /// The directory evcxr builds the session crate in.
    crate_dir: Option<PathBuf>,
    /// Whether final values may be shown with one compile (see
    /// [`one_compile`]); `FERROLAB_ONE_COMPILE=0` turns it off.
    one_compile: bool,
    /// The session's display settings; `None` until read (again, after a
    /// cell with evcxr commands, which may have changed them).
    display: Option<one_compile::DisplaySettings>,
    /// Whether `:fmt` is evcxr's default (tracked: evcxr cannot report it
    /// without resetting it).
    default_format: bool,
}

pub(super) fn run(shared: Arc<Shared>, jobs: Receiver<Job>) {
    let started = std::time::Instant::now();
    let mut worker = match Worker::start(shared.clone()) {
        Ok(worker) => {
            log::info!("engine ready in {:.2?}", started.elapsed());
            Some(worker)
        }
        Err(reason) => {
            log::error!("engine failed to start: {reason}");
            serve_unavailable(&reason, jobs);
            return;
        }
    };
    if let Some(worker) = worker.as_mut()
        && jobs.is_empty()
    {
        worker.warm_up();
    }
    shared.ready.store(true, Ordering::SeqCst);
    loop {
        let job = match jobs.recv_timeout(IDLE_NOTICE) {
            Ok(job) => job,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if worker.is_none() {
                    break;
                }
                let hook = shared
                    .idle_hook
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                if let Some(hook) = hook {
                    hook();
                }
                continue;
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        let Some(current) = worker.as_mut() else {
            break;
        };
        match job {
            Job::Execute {
                code,
                first_line,
                cell,
                done,
            } => {
                let (outcome, lost_variables) = current.execute(&code, first_line, &cell);
                let _ = done.send(CellRun {
                    outcome,
                    times: shared.link.take_times(),
                    lost_variables,
                });
            }
            Job::Complete { code, offset, done } => {
                let _ = done.send(current.complete(&code, offset));
            }
            Job::Inspect { code, offset, done } => {
                let _ = done.send(current.inspect(&code, offset));
            }
            Job::Variables { done } => {
                let _ = done.send(current.variables());
            }
            Job::Background { code, done } => {
                let _ = done.send(current.run_in_background(&code));
            }
            Job::ItemNames { done } => {
                let mut names: Vec<String> = current
                    .context
                    .defined_item_names()
                    .map(str::to_owned)
                    .collect();
                names.sort();
                let _ = done.send(names);
            }
            Job::Shutdown { done } => {
                // Dropping the context ends the runtime and deletes evcxr's temp dir.
                worker = None;
                let _ = done.send(());
            }
        }
    }
}

/// Answers every job with the startup error, so cells explain what is wrong.
fn serve_unavailable(reason: &str, jobs: Receiver<Job>) {
    for job in jobs {
        match job {
            Job::Execute { done, .. } => {
                let outcome = ExecuteOutcome::error(
                    "EngineUnavailable",
                    reason,
                    vec![
                        format!("{RED}The Rust engine could not start{RESET}"),
                        reason.to_owned(),
                    ],
                );
                let _ = done.send(CellRun {
                    outcome,
                    times: Default::default(),
                    lost_variables: Vec::new(),
                });
            }
            Job::Complete { done, .. } => {
                let _ = done.send(None);
            }
            Job::Inspect { done, .. } => {
                let _ = done.send(None);
            }
            Job::Variables { done } => {
                let _ = done.send(Vec::new());
            }
            Job::ItemNames { done } => {
                let _ = done.send(Vec::new());
            }
            Job::Background { done, .. } => {
                let _ = done.send(Err(reason.to_owned()));
            }
            Job::Shutdown { done } => {
                let _ = done.send(());
            }
        }
    }
}

impl Worker {
    fn start(shared: Arc<Shared>) -> Result<Worker, String> {
        if let Some(missing) = toolchain::missing_toolchain() {
            return Err(missing);
        }
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot locate the ferrolab binary: {e}"))?;
        let mut command = std::process::Command::new(exe);
        command.env(super::relay::LINK_ENV, shared.link.path());
        // The cells' code links libstd dynamically. rustc records a relative
        // rpath for the build directory, and evcxr loads the library from one
        // level up, so when the toolchain and the build directory share a
        // parent (a toolchain unpacked under /tmp, a TMPDIR in $HOME) it points
        // one directory off. Telling the loader where libstd is always works.
        if let Some(libdir) = toolchain::target_libdir() {
            let mut paths = vec![libdir];
            if let Some(existing) = std::env::var_os("LD_LIBRARY_PATH") {
                paths.extend(std::env::split_paths(&existing));
            }
            if let Ok(joined) = std::env::join_paths(paths) {
                command.env("LD_LIBRARY_PATH", joined);
            }
        }
        // Its own process group: a SIGINT sent to the kernel's group (Ctrl-C
        // in a terminal, signal-mode interrupts) never kills the runtime. It
        // dies with the kernel, and the reaper ends its group then.
        crate::os::process_tree::reaper::enroll(&mut command);
        let started = std::time::Instant::now();
        let (mut eval_context, outputs) = catch_unwind(AssertUnwindSafe(|| {
            EvalContext::with_subprocess_command(command)
        }))
        .map_err(|_| "evcxr panicked while starting".to_owned())?
        .map_err(|error| toolchain::explain_start_failure(&error.to_string()))?;
        evcxr_contract::hide_from_analysis(&mut eval_context, &shared.analysis_hidden);
        log::info!(
            "evcxr context (with its warm-up compile) in {:.2?}",
            started.elapsed()
        );
        let mut context = CommandContext::with_eval_context(eval_context);
        for (key, value) in ferrolab_buildcache::cargo_env_for_this_binary() {
            let _ = context.execute(&format!(":build_env {key}={value}"));
        }
        let _ = shared.process.set(context.process_handle());
        forward_lines(outputs.stdout, shared.clone(), StreamName::Stdout);
        forward_lines(outputs.stderr, shared.clone(), StreamName::Stderr);
        if let Err(error) = context.execute(":load_config --quiet") {
            log::warn!("evcxr configuration (evcxr.toml / init.evcxr) failed to load: {error}");
        }
        let crate_dir = context
            .execute(":last_compile_dir")
            .ok()
            .and_then(|outputs| outputs.content_by_mime_type.get("text/plain").cloned())
            .map(|dir| PathBuf::from(dir.trim()));
        let mut worker = Worker {
            context,
            shared,
            needs_prelude: true,
            runtime_pid: None,
            crate_dir,
            one_compile: one_compile::enabled_by_env(),
            display: None,
            default_format: true,
        };
        let prelude_started = std::time::Instant::now();
        worker.prepare_runtime(None);
        log::info!("prelude in {:.2?}", prelude_started.elapsed());
        Ok(worker)
    }

    /// Restores the prelude (after start or `:clear`) or re-runs its setup in a
    /// new runtime process (after a crash, an interrupt or `:restart`).
    fn prepare_runtime(&mut self, cell: Option<&CellContext>) {
        let pid = self.shared.runtime_pid();
        let code = if self.needs_prelude {
            format!("{}\n{}", prelude::ITEMS, prelude::SETUP)
        } else if pid != self.runtime_pid {
            prelude::SETUP.to_owned()
        } else {
            return;
        };
        match self.context.execute(&code) {
            Ok(_) => {
                self.needs_prelude = false;
                self.runtime_pid = self.shared.runtime_pid();
                self.shared.link.sync(SYNC_TIMEOUT);
            }
            Err(error) => {
                log::warn!("prelude failed: {error}");
                if let Some(cell) = cell {
                    cell.stream(
                        StreamName::Stderr,
                        &format!(
                            "ferrolab: display helpers are unavailable in this session: {error}\n"
                        ),
                    );
                }
            }
        }
    }

    /// Pays rust-analyzer's first look at the standard library now, while no
    /// cell waits (see `prelude::WARM_UP`); a cell that is already queued
    /// goes first instead, and pays it itself if it defines a variable.
    fn warm_up(&mut self) {
        let started = std::time::Instant::now();
        match self.context.execute(prelude::WARM_UP) {
            Ok(_) => log::info!("warm-up in {:.2?}", started.elapsed()),
            Err(error) => log::warn!("warm-up failed: {error}"),
        }
    }

    /// Runs evcxr commands with no cell (see `Engine::run_in_background`).
    fn run_in_background(&mut self, code: &str) -> Result<(), String> {
        self.prepare_runtime(None);
        *self
            .shared
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        let result = self.context.execute(code).map(|_| ());
        if evcxr_contract::clears_session(code) {
            // `:clear` removed the prelude too; the next cell restores it.
            self.needs_prelude = true;
        }
        result.map_err(|error| error.to_string())
    }

    /// Runs a cell; returns its outcome and the variables it lost (a restarted runtime).
    fn execute(
        &mut self,
        code: &str,
        first_line: usize,
        cell: &CellContext,
    ) -> (ExecuteOutcome, Vec<(String, String)>) {
        self.shared.link.set_sink(cell);
        *self
            .shared
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(cell.clone());
        self.shared
            .interrupt_requested
            .store(false, Ordering::SeqCst);
        self.shared.builds_killed.store(false, Ordering::SeqCst);
        self.shared.runtime_killed.store(false, Ordering::SeqCst);
        let gate = self.shared.gate.open();
        self.shared.cell_number.fetch_add(1, Ordering::SeqCst);
        self.shared.executing.store(true, Ordering::SeqCst);
        if cell.is_cancelled() {
            // Interrupted while the cell waited for the engine.
            self.shared.interrupt();
        }

        let ran = self.run_cell(code, first_line, cell, &gate);

        self.shared.executing.store(false, Ordering::SeqCst);
        // Dropping the sender ends the thread that keeps a stopped build stopped.
        *self
            .shared
            .build_stopper
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        self.shared.gate.close();
        *self
            .shared
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        if self.shared.builds_killed.load(Ordering::SeqCst) {
            self.clean_killed_build();
        }
        crate::os::process_tree::reaper::forget_ended();
        ran
    }

    /// Prepares the runtime, runs `code` behind its gate and says how it
    /// went, with the variables lost when the runtime had to restart.
    fn run_cell(
        &mut self,
        code: &str,
        first_line: usize,
        cell: &CellContext,
        gate: &Path,
    ) -> (ExecuteOutcome, Vec<(String, String)>) {
        self.prepare_runtime(Some(cell));
        let _ = self.shared.link.take_panic();
        let _ = self.shared.link.take_user_error();
        let _ = self.shared.link.take_times();
        let before: Vec<(String, String)> = self.variables();
        let clears = evcxr_contract::clears_session(code);
        let rewritten = self.one_compile_rewrite(code);
        // Content blocks are shown as they come unless evcxr will show the
        // cell's value its own way (then the last one is that value).
        let live = rewritten.is_some() || one_compile::shows_no_value(code);
        let guarded = match run_gate::guard(code, gate, live) {
            Some(guarded) if !self.needs_prelude && !clears => Some(guarded),
            unusable => {
                // No Rust code, or no prelude to define the gate (`:clear`
                // removes it before the code is built).
                self.shared.gate.unguarded(unusable.is_some());
                None
            }
        };
        if self.shared.gate.stopped() {
            return (interrupted_before_run(&before, &before), Vec::new());
        }
        let to_run = guarded
            .as_ref()
            .map_or(code, |guarded| guarded.code.as_str());

        // The rewritten cell, behind the same gate line (the rewrite changes
        // no line, so `gate_line` holds for both).
        let rewritten = rewritten.map(|rewritten| match &guarded {
            Some(_) => run_gate::guard(&rewritten, gate, true).map_or(rewritten, |g| g.code),
            None => rewritten,
        });
        let mut result = self.run_code(rewritten.as_deref().unwrap_or(to_run), cell);
        if rewritten.is_some()
            && matches!(result, Ok(Err(evcxr::Error::CompilationErrors(_))))
            && !self.shared.interrupt_requested.load(Ordering::SeqCst)
            && !cell.is_cancelled()
            && !self.shared.gate.stopped()
        {
            // It did not compile, so none of it ran: let evcxr show the cell
            // its own way (its error, or a value the rewrite cannot show).
            log::debug!("one-compile display did not compile; running the cell as written");
            // As written, evcxr shows the value: the cell's blocks go to it.
            let as_written = guarded
                .as_ref()
                .and_then(|_| run_gate::guard(code, gate, false))
                .map(|g| g.code);
            result = self.run_code(as_written.as_deref().unwrap_or(to_run), cell);
        }
        if one_compile::has_commands(code) {
            self.display = None;
            let succeeded = matches!(result, Ok(Ok(_)));
            self.default_format = one_compile::format_after(code, self.default_format, succeeded);
        }

        self.shared.link.sync(SYNC_TIMEOUT);
        let interrupted =
            self.shared.interrupt_requested.load(Ordering::SeqCst) || cell.is_cancelled();
        // An interrupt that claimed the gate: the cell's code did not run.
        let stopped = self.shared.gate.stopped();
        if clears {
            self.needs_prelude = true;
        }
        let gate_line = guarded.map(|guarded| guarded.gate_line);
        let outcome = match result {
            Err(panic) => internal_error(&panic),
            Ok(Ok(_)) if stopped => interrupted_before_run(&before, &self.variables()),
            Ok(Ok(_)) if self.shared.runtime_killed.load(Ordering::SeqCst) => {
                // The interrupt killed the runtime as the cell finished, before
                // evcxr noticed: restart it now, not in the middle of the next cell.
                let lost = self.variables();
                if let Err(error) = self.context.execute(":restart") {
                    log::warn!("could not restart the Rust runtime: {error}");
                }
                return (lost_runtime("", true, &lost), lost);
            }
            Ok(Ok(outputs)) => self.success(outputs, cell),
            Ok(Err(evcxr::Error::SubprocessTerminated(detail))) => {
                let outcome = lost_runtime(&detail, interrupted && !stopped, &before);
                return (outcome, before);
            }
            Ok(Err(_)) if interrupted => interrupted_before_run(&before, &self.variables()),
            Ok(Err(error)) => self.failure(error, code, first_line, gate_line),
        };
        (outcome, Vec::new())
    }

    /// Runs `code` through evcxr, asking the notebook for input lines.
    fn run_code(
        &mut self,
        code: &str,
        cell: &CellContext,
    ) -> std::thread::Result<Result<EvalOutputs, evcxr::Error>> {
        catch_unwind(AssertUnwindSafe(|| {
            self.context.execute_with_callbacks(
                code,
                &mut EvalCallbacks {
                    input_reader: &|request| match cell.input(&request.prompt, request.is_password)
                    {
                        Ok(line) => line,
                        Err(error) => {
                            cell.stream(
                                StreamName::Stderr,
                                &format!(
                                    "ferrolab: no input: {error}; the program reads an empty line\n"
                                ),
                            );
                            String::new()
                        }
                    },
                },
            )
        }))
    }

    /// The cell with its final value shown in one compile, where that shows
    /// exactly what evcxr would (see [`one_compile`]).
    fn one_compile_rewrite(&mut self, code: &str) -> Option<String> {
        if !self.one_compile || self.needs_prelude {
            return None;
        }
        let rewritten = one_compile::rewrite(code)?;
        let display = match self.display {
            Some(display) => display,
            None => {
                let display = self.read_display_settings()?;
                self.display = Some(display);
                display
            }
        };
        display.rewrite_matches_evcxr().then_some(rewritten)
    }

    /// Asks evcxr for `:types` (a command: nothing compiles). It only
    /// toggles, so it is toggled twice; the first answer says what it was.
    fn read_display_settings(&mut self) -> Option<one_compile::DisplaySettings> {
        let mut answer = |command: &str| {
            self.context
                .execute(command)
                .ok()
                .and_then(|outputs| outputs.content_by_mime_type.get("text/plain").cloned())
        };
        let toggled = answer(":types")?;
        let _restored = answer(":types")?;
        Some(one_compile::DisplaySettings::new(
            self.default_format,
            &toggled,
        ))
    }

    /// A build killed part-way can leave the session crate's incremental
    /// cache and objects half-written, and the next cells would then fail to
    /// link (rustc reuses what it finds). Removes them: the next cell builds
    /// the crate from scratch (dependencies are kept).
    fn clean_killed_build(&self) {
        let Some(crate_dir) = &self.crate_dir else {
            return;
        };
        for removed in build_cleanup::remove_session_crate_artifacts(crate_dir) {
            log::info!("removed {} left by a stopped build", removed.display());
        }
    }

    fn success(&mut self, outputs: EvalOutputs, cell: &CellContext) -> ExecuteOutcome {
        if let Some(panic) = self.shared.link.take_panic() {
            return ExecuteOutcome::error(
                "panic",
                panic.message.clone(),
                vec![
                    format!(
                        "{RED}thread '{}' panicked{RESET}: {}",
                        panic.thread, panic.message
                    ),
                    "Variables defined in this cell were dropped; earlier variables are unchanged."
                        .to_owned(),
                ],
            );
        }
        if self.shared.link.take_user_error() {
            // evcxr calls this a success; Run All must stop here, as at an exception.
            return ExecuteOutcome::error(
                "Error",
                "the cell's code returned an error through `?` (printed above); \
                 variables defined in this cell were not kept"
                    .to_owned(),
                vec![
                    format!(
                        "{RED}Error{RESET}: the cell stopped at a `?` that returned an error (printed above)."
                    ),
                    "Variables defined in this cell were not kept; earlier variables are unchanged."
                        .to_owned(),
                ],
            );
        }
        if let Some(timing) = outputs.timing {
            // `:timing` on: the total, then where it went (evcxr's phases).
            let phases: Vec<String> = outputs
                .phases
                .iter()
                .map(|phase| format!("{} {}ms", phase.name, phase.duration.as_millis()))
                .collect();
            let detail = if phases.is_empty() {
                String::new()
            } else {
                format!(" ({})", phases.join(", "))
            };
            cell.stream(
                StreamName::Stdout,
                &format!("Took {}ms{detail}\n", timing.as_millis()),
            );
        }
        ExecuteOutcome::Ok {
            result: render::bundle(&outputs.content_by_mime_type),
            payload: Vec::new(),
        }
    }

    fn failure(
        &mut self,
        error: evcxr::Error,
        code: &str,
        first_line: usize,
        gate_line: Option<usize>,
    ) -> ExecuteOutcome {
        match error {
            evcxr::Error::CompilationErrors(errors) => {
                let report = render::compile_errors(&errors, code, first_line, gate_line);
                ExecuteOutcome::error("CompileError", report.summary, report.traceback)
            }
            evcxr::Error::TypeRedefinedVariablesLost(names) => {
                let list = names.join(", ");
                ExecuteOutcome::error(
                    "VariablesLost",
                    format!("the type of {list} changed, so the old values were dropped"),
                    vec![format!(
                        "{RED}VariablesLost{RESET}: a new definition changed the type of {list}; define them again"
                    )],
                )
            }
            other => {
                let text = other.to_string();
                let first = text.lines().next().unwrap_or("evcxr error").to_owned();
                let mut traceback = vec![format!("{RED}Error{RESET}: {first}")];
                traceback.extend(text.lines().skip(1).map(str::to_owned));
                ExecuteOutcome::error("Error", first, traceback)
            }
        }
    }

    /// The session's variables, ferrolab's own `__ferrolab…` helpers left out.
    fn variables(&self) -> Vec<(String, String)> {
        let mut variables: Vec<(String, String)> = self
            .context
            .variables_and_types()
            .filter(|(name, _)| !name.starts_with("__ferrolab"))
            .map(|(name, ty)| (name.to_owned(), ty.to_owned()))
            .collect();
        variables.sort();
        variables
    }

    fn complete(&mut self, code: &str, offset: usize) -> Option<CompletionSet> {
        let completions = catch_unwind(AssertUnwindSafe(|| self.context.completions(code, offset)))
            .ok()?
            .ok()?;
        let mut items: Vec<(String, String)> = Vec::new();
        for completion in &completions.completions {
            if !items.iter().any(|(code, _)| code == &completion.code) {
                items.push((completion.code.clone(), completion.kind.to_owned()));
            }
        }
        Some(CompletionSet {
            items,
            start: completions.start_offset,
            end: completions.end_offset,
        })
    }

    fn inspect(&mut self, code: &str, offset: usize) -> Option<Hover> {
        let (plain, html) = catch_unwind(AssertUnwindSafe(|| self.context.hover_at(code, offset)))
            .ok()?
            .ok()?;
        if plain.trim().is_empty() || plain.trim() == "No documentation found" {
            return None;
        }
        Some(Hover { plain, html })
    }
}

/// An interrupt stopped the cell before any of its code ran. `after` differs
/// from `before` only by variables the cell takes ownership of (moved into
/// its code), which went with it.
fn interrupted_before_run(
    before: &[(String, String)],
    after: &[(String, String)],
) -> ExecuteOutcome {
    let gone: Vec<&str> = before
        .iter()
        .filter(|(name, _)| !after.iter().any(|(kept, _)| kept == name))
        .map(|(name, _)| name.as_str())
        .collect();
    let (evalue, detail) = if gone.is_empty() {
        (
            "the cell was interrupted before its code ran; no variables were lost".to_owned(),
            "No variables were lost.".to_owned(),
        )
    } else {
        let list = gone.join(", ");
        (
            format!(
                "the cell was interrupted before its code ran; it had taken ownership of {list}, which were dropped"
            ),
            format!(
                "Every other variable is kept. The cell takes ownership of {list} (moves them), so they were dropped with it; define them again."
            ),
        )
    };
    ExecuteOutcome::error(
        "Interrupted",
        evalue,
        vec![
            format!("{RED}Interrupted{RESET}: the cell was stopped before its code ran."),
            detail,
        ],
    )
}

/// The runtime process ended: say why, and which variables went with it.
fn lost_runtime(detail: &str, interrupted: bool, before: &[(String, String)]) -> ExecuteOutcome {
    let lost = if before.is_empty() {
        "No variables were lost (none were defined).".to_owned()
    } else {
        let list: Vec<String> = before
            .iter()
            .map(|(name, ty)| format!("{name}: {ty}"))
            .collect();
        format!("Lost variables: {}", list.join(", "))
    };
    let names: Vec<&str> = before.iter().map(|(name, _)| name.as_str()).collect();
    let (ename, cause) = if interrupted {
        (
            "Interrupted",
            "the cell was interrupted, so the Rust runtime was restarted".to_owned(),
        )
    } else {
        let status = detail.lines().last().unwrap_or(detail).trim().to_owned();
        let hint = if status.contains("SIGKILL") || status.contains("signal: 9") {
            " (killed: often the machine ran out of memory)"
        } else {
            ""
        };
        (
            "RuntimeCrashed",
            format!("the Rust runtime process died: {status}{hint}"),
        )
    };
    let evalue = if names.is_empty() {
        cause.clone()
    } else {
        format!("{cause}; lost variables: {}", names.join(", "))
    };
    let mut traceback = vec![format!("{RED}{ename}{RESET}: {cause}"), lost];
    if !interrupted {
        // Whatever the runtime printed before it died (its last line is the status).
        let lines: Vec<&str> = detail
            .lines()
            .filter(|line| !line.trim().is_empty())
            .collect();
        traceback.extend(
            lines
                .iter()
                .take(lines.len().saturating_sub(1))
                .map(|line| line.to_string()),
        );
    }
    traceback.push(
        "Functions, types and :dep crates are kept; run the cells that define the variables again."
            .to_owned(),
    );
    ExecuteOutcome::error(ename, evalue, traceback)
}

fn internal_error(panic: &Box<dyn std::any::Any + Send>) -> ExecuteOutcome {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    log::error!("evcxr panicked: {message}");
    ExecuteOutcome::error(
        "InternalError",
        format!("evcxr hit an internal error: {message}"),
        vec![
            format!("{RED}InternalError{RESET}: evcxr hit an internal error: {message}"),
            "The kernel is still running. If cells keep failing, restart the kernel.".to_owned(),
        ],
    )
}

/// Passes lines evcxr itself reports (when the relay is not in use) to the cell.
fn forward_lines(lines: Receiver<String>, shared: Arc<Shared>, name: StreamName) {
    let spawned = std::thread::Builder::new()
        .name("ferrolab-evcxr-output".into())
        .spawn(move || {
            for line in lines {
                shared.link.emit(name, &format!("{line}\n"));
            }
        });
    if let Err(error) = spawned {
        log::warn!("cannot forward evcxr output: {error}");
    }
}

/// Descendants of this process (cargo, rustc, linkers), except the runtime
/// process and what it started, and the process reaper.
pub(super) fn build_processes(runtime: Option<u32>) -> Vec<u32> {
    let mut system = System::new();
    let reaper = crate::os::process_tree::reaper::pid();
    crate::os::process_tree::descendants(
        &mut system,
        std::process::id(),
        runtime,
        ProcessRefreshKind::nothing(),
    )
    .into_iter()
    .filter(|pid| Some(*pid) != reaper)
    .collect()
}
