//! The cell router: splits each cell into segments and runs them in order.
//!
//! Implements the kernel's [`Interpreter`]. Rust goes to the evcxr
//! [`Engine`]; `%magic`, `%%magic`, `!shell` and `?help` go to the
//! [`magics`](crate::magics) registry. The first failing segment stops the
//! cell and is its single error. A value from a segment that is not the last
//! is shown as display data; the last segment's value is the cell's result.
//! Completeness checks are answered here, without the engine.
//!
//! Cells of several shells (the main shell and its subshells) may run at
//! once. The magics' shared state is locked per segment, not per cell, and a
//! Rust segment holds it only around its hooks, never while its code
//! compiles or runs: a subshell's `%gpu` or `!tail` answers while the main
//! shell trains. Rust segments take turns (`rust_turn`, taken before the
//! state lock, never after it); one that got its turn after an interrupt does
//! not run.

mod completeness;
pub mod help;
mod identity;
mod lexer;
mod python_lines;
pub mod segments;
pub mod session_deps;

use crate::engine::Engine;
use crate::engine::session_dir::SessionDir;
use crate::engine::text::{byte_offset, code_point_index};
use crate::kernel::{
    CellContext, Completeness, Completions, ExecuteOutcome, Interpreter, KernelIdentity, StreamName,
};
use crate::kernel_environment::KernelEnvironment;
use crate::magics::hooks::RustRun;
use crate::magics::shell::{self, ProcessSlot};
use crate::magics::{Call, Kind, MagicResult, MagicState, Registry};
use crate::protocol::content::MimeBundle;
use segments::Segment;
use serde_json::{Map, Value, json};
use std::sync::{Arc, Mutex, MutexGuard};

pub struct Router {
    engine: Engine,
    registry: Registry,
    state: Mutex<MagicState>,
    /// Held for the whole of a Rust segment (hooks, compile, run).
    rust_turn: Mutex<()>,
    running: ProcessSlot,
    environment: Arc<KernelEnvironment>,
    kernel_name: String,
    started: std::sync::Once,
    /// The crates this session added (see `session_deps`).
    deps: Mutex<session_deps::SessionDeps>,
    /// Told the new list whenever it changes.
    deps_hook: Mutex<Option<DepsHook>>,
}

type DepsHook = Arc<dyn Fn(Vec<String>) + Send + Sync>;

impl Router {
    /// A router whose engine keeps its files in `session` (removed at shutdown).
    pub fn new(session: Option<SessionDir>, kernel_name: &str) -> Self {
        let running = ProcessSlot::default();
        let environment = Arc::new(KernelEnvironment::default());
        Router {
            engine: Engine::new(session)
                .hiding_from_analysis(&[crate::magics::checkpoint::RUNTIME_CRATE]),
            registry: Registry::standard(),
            state: Mutex::new(MagicState::new(running.clone(), environment.clone())),
            rust_turn: Mutex::new(()),
            running,
            environment,
            kernel_name: kernel_name.to_owned(),
            started: std::sync::Once::new(),
            deps: Mutex::default(),
            deps_hook: Mutex::new(None),
        }
    }

    /// Calls `hook` with the session's `:dep` lines each time a cell changes
    /// them (on the cell's thread, after the cell's Rust ran).
    pub fn when_deps_change(&self, hook: DepsHook) {
        *self.deps_hook.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// Builds and loads crates before any cell asks for them (a warm spare):
    /// `lines` are `:dep` lines, run with the checkpoint runtime as a first
    /// `:dep` cell runs them. Takes the Rust turn, so a cell that comes
    /// meanwhile waits for it.
    pub fn preload_deps(&self, lines: &[String]) -> Result<(), String> {
        let _turn = self
            .rust_turn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut code = lines.join("\n");
        let runtime_loaded = self.state().checkpoint.runtime_loaded;
        if !runtime_loaded {
            let runtime = crate::magics::checkpoint::dep_line().map_err(|e| e.evalue)?;
            code = format!("{runtime}\n{code}");
        }
        self.engine.run_in_background(&code)?;
        self.state().checkpoint.preloaded(lines);
        self.deps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(lines);
        Ok(())
    }

    /// Empties the session (evcxr's `:clear`: crates, items, variables), as
    /// a cell with `:clear` would; the prelude comes back before the next cell.
    pub fn clear_session(&self) -> Result<(), String> {
        let _turn = self
            .rust_turn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.engine
            .run_in_background(crate::engine::evcxr_contract::CLEAR_COMMAND)?;
        self.state().checkpoint.cleared();
        self.deps.lock().unwrap_or_else(|p| p.into_inner()).clear();
        Ok(())
    }

    /// Takes in the `:dep` lines of a Rust segment that succeeded.
    fn note_deps(&self, code: &str) {
        let lines = {
            let mut deps = self.deps.lock().unwrap_or_else(|p| p.into_inner());
            if !deps.record(code) {
                return;
            }
            deps.lines()
        };
        let hook = self
            .deps_hook
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(hook) = hook {
            hook(lines);
        }
    }

    /// Takes over a launch as a warm spare adopts it: its working directory
    /// (the kernel's, the shell commands' and the Rust runtime's) and its
    /// per-kernel variables (`changes`: set or removed), applied as `%env`
    /// applies them.
    pub fn adopt(
        &self,
        cwd: &std::path::Path,
        changes: &[(String, Option<String>)],
    ) -> Result<(), String> {
        std::env::set_current_dir(cwd).map_err(|e| format!("{}: {e}", cwd.display()))?;
        self.engine.chdir(cwd)?;
        let mut state = self.state();
        state.dir_history = vec![cwd.to_path_buf()];
        for (name, value) in changes {
            self.engine.set_env(name, value.as_deref())?;
            state.env.insert(name.clone(), value.clone());
        }
        Ok(())
    }

    /// Runs `hook` once, the first time the engine has had nothing to do for
    /// a moment after it started.
    pub fn when_engine_idle(&self, hook: Box<dyn FnOnce() + Send>) {
        self.engine.when_idle(hook);
    }

    /// Whether the engine has started and warmed up.
    pub fn engine_ready(&self) -> bool {
        self.engine.is_ready()
    }

    fn state(&self) -> MutexGuard<'_, MagicState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs one segment; adds to `lost` the `(name, type)` of variables a
    /// restarted runtime took with it.
    fn run_segment(
        &self,
        segment: Segment,
        cell: &CellContext,
        lost: &mut Vec<(String, String)>,
    ) -> ExecuteOutcome {
        let call = |name: &str, args: &str, body: &str, run: &dyn Fn(&mut Call) -> MagicResult| {
            let mut state = self.state();
            let mut call = Call {
                name,
                args,
                body,
                cell,
                engine: &self.engine,
                state: &mut state,
                registry: &self.registry,
            };
            into_outcome(run(&mut call))
        };
        match segment {
            Segment::Rust { code, first_line } => self.run_rust(&code, first_line, cell, lost),
            Segment::LineMagic { name, args, .. } => match self.registry.find(Kind::Line, &name) {
                Some(magic) => call(&name, &args, "", &magic.run),
                None => into_outcome(Err(self.registry.unknown(Kind::Line, &name))),
            },
            Segment::CellMagic {
                name, args, body, ..
            } => match self.registry.find(Kind::Cell, &name) {
                Some(magic) => call(&name, &args, &body, &magic.run),
                None => into_outcome(Err(self.registry.unknown(Kind::Cell, &name))),
            },
            Segment::Shell {
                command, capture, ..
            } => call("!", &command, "", &|call: &mut Call| {
                shell::line(call, call.args, capture)
            }),
            Segment::Help(query) => self.help(&query.target, cell),
        }
    }

    fn run_rust(
        &self,
        code: &str,
        first_line: usize,
        cell: &CellContext,
        lost: &mut Vec<(String, String)>,
    ) -> ExecuteOutcome {
        let _turn = self
            .rust_turn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if cell.is_cancelled() {
            // Interrupted while another shell's Rust code had the turn.
            return interrupted_before_running();
        }
        let mut run = RustRun::new(code);
        {
            let mut state = self.state();
            let env = state.environment();
            for hook in state.hooks() {
                run = match hook.before_rust(&self.engine, run, cell, &env) {
                    Ok(run) => run,
                    Err(error) => return error.into(),
                };
            }
        }
        let ran = self
            .engine
            .run(&run.code, first_line - run.lines_added, cell);
        let succeeded = matches!(ran.outcome, ExecuteOutcome::Ok { .. });
        for hook in self.state().hooks() {
            hook.after_rust(code, &run, succeeded);
        }
        if succeeded {
            self.note_deps(code);
        }
        lost.extend(ran.lost_variables);
        let mut outcome = ran.outcome;
        if let ExecuteOutcome::Error(error) = &mut outcome
            && error.ename == "CompileError"
        {
            error.traceback.extend(python_lines::hints(code));
        }
        outcome
    }

    fn help(&self, target: &str, cell: &CellContext) -> ExecuteOutcome {
        let data = if target.starts_with('%') {
            self.registry.help(target).map(|text| {
                let mut data = MimeBundle::new();
                data.insert("text/plain".into(), Value::String(text));
                data
            })
        } else {
            self.hover_for(target)
        };
        match data {
            Some(data) => ExecuteOutcome::Ok {
                result: None,
                payload: vec![json!({"source": "page", "data": data, "start": 0})],
            },
            None => {
                cell.stream(
                    StreamName::Stdout,
                    &format!("No documentation found for `{target}`.\n"),
                );
                ExecuteOutcome::ok()
            }
        }
    }

    fn hover_for(&self, target: &str) -> Option<MimeBundle> {
        let hover = self.engine.inspect(target, target.len())?;
        let mut data = MimeBundle::new();
        data.insert("text/plain".into(), Value::String(hover.plain));
        data.insert("text/html".into(), Value::String(hover.html));
        Some(data)
    }

    /// Magic names, when the cursor is in the name of a `%magic` line.
    fn complete_magic(&self, code: &str, offset: usize) -> Option<(Vec<String>, usize)> {
        let line_start = code[..offset].rfind('\n').map_or(0, |i| i + 1);
        let typed = &code[line_start..offset];
        let word = typed.trim_start();
        if !word.starts_with('%') || word.contains(char::is_whitespace) {
            return None;
        }
        let matches: Vec<String> = self
            .registry
            .names()
            .filter(|name| name.starts_with(word))
            .collect();
        Some((matches, offset - word.len()))
    }
}

fn into_outcome(result: MagicResult) -> ExecuteOutcome {
    match result {
        Ok(result) => ExecuteOutcome::Ok {
            result,
            payload: Vec::new(),
        },
        Err(error) => error.into(),
    }
}

impl Interpreter for Router {
    fn start(&self) {
        self.started.call_once(|| {
            self.engine.start();
            let environment = self.environment.clone();
            std::thread::spawn(move || environment.probe());
        });
    }

    fn identity(&self) -> KernelIdentity {
        identity::identity(&self.environment, &self.kernel_name)
    }

    fn execute(&self, code: &str, cell: &CellContext) -> ExecuteOutcome {
        let segments = segments::parse(code);
        let last = segments.len().saturating_sub(1);
        let mut final_result = None;
        let mut payload = Vec::new();
        let mut lost = Vec::new();
        for (index, segment) in segments.into_iter().enumerate() {
            if cell.is_cancelled() {
                // Stopped between segments (or before the first): what ran is kept.
                return if index == 0 {
                    interrupted_before_running()
                } else {
                    ExecuteOutcome::error(
                        "Interrupted",
                        "the cell was interrupted; the rest of it did not run; no variables were lost",
                        vec![
                            "\x1b[1;31mInterrupted\x1b[0m: the cell was interrupted; the rest of it did not run.".into(),
                            "No variables were lost.".into(),
                        ],
                    )
                };
            }
            match self.run_segment(segment, cell, &mut lost) {
                ExecuteOutcome::Ok {
                    result,
                    payload: more,
                } => {
                    payload.extend(more);
                    match result {
                        Some(result) if index < last => cell.display(result, Map::new(), None),
                        Some(result) => final_result = Some(result),
                        None => {}
                    }
                }
                mut error => {
                    let mut state = self.state();
                    let env = state.environment();
                    for hook in state.hooks() {
                        hook.after_cell(&self.engine, cell, false, &env);
                    }
                    if let ExecuteOutcome::Error(info) = &mut error
                        && !lost.is_empty()
                    {
                        for hook in state.hooks() {
                            hook.after_loss(&lost, info, &env);
                        }
                    }
                    return error;
                }
            }
        }
        {
            let mut state = self.state();
            let env = state.environment();
            for hook in state.hooks() {
                hook.after_cell(&self.engine, cell, true, &env);
            }
        }
        if cell.is_cancelled() {
            return ExecuteOutcome::error(
                "Interrupted",
                "the cell was interrupted",
                vec!["\x1b[1;31mInterrupted\x1b[0m: the cell was interrupted".into()],
            );
        }
        ExecuteOutcome::Ok {
            result: final_result,
            payload,
        }
    }

    fn complete(&self, code: &str, cursor: usize) -> Completions {
        let offset = byte_offset(code, cursor);
        if let Some((matches, start)) = self.complete_magic(code, offset) {
            return Completions {
                matches,
                cursor_start: code_point_index(code, start),
                cursor_end: cursor,
                types: Vec::new(),
            };
        }
        let Some(set) = self.engine.complete(code, offset) else {
            return Completions {
                cursor_start: cursor,
                cursor_end: cursor,
                ..Completions::default()
            };
        };
        let cursor_start = code_point_index(code, set.start);
        let cursor_end = code_point_index(code, set.end);
        let types = set
            .items
            .iter()
            .map(|(text, kind)| json!({"text": text, "type": kind, "start": cursor_start, "end": cursor_end}))
            .collect();
        Completions {
            matches: set.items.into_iter().map(|(text, _)| text).collect(),
            cursor_start,
            cursor_end,
            types,
        }
    }

    fn inspect(&self, code: &str, cursor: usize, _detail_level: u8) -> Option<MimeBundle> {
        let offset = byte_offset(code, cursor);
        let hover = self.engine.inspect(code, offset)?;
        let mut data = MimeBundle::new();
        data.insert("text/plain".into(), Value::String(hover.plain));
        data.insert("text/html".into(), Value::String(hover.html));
        Some(data)
    }

    fn is_complete(&self, code: &str) -> Completeness {
        completeness::check(code)
    }

    fn history_text(&self, code: &str) -> String {
        ferrolab_secrets::redact_history(code)
    }

    fn interrupt(&self) {
        self.running.interrupt();
        self.engine.interrupt();
    }

    fn shutdown(&self) {
        self.running.interrupt();
        self.engine.shutdown();
    }
}

/// A cell stopped before any of its code ran.
fn interrupted_before_running() -> ExecuteOutcome {
    ExecuteOutcome::error(
        "Interrupted",
        "the cell was interrupted before its code ran; no variables were lost",
        vec![
            "\x1b[1;31mInterrupted\x1b[0m: the cell was stopped before its code ran.".into(),
            "No variables were lost.".into(),
        ],
    )
}
