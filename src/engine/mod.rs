//! The evcxr engine: Rust cells, completion and hover, on one dedicated thread.
//!
//! [`Engine`] is a handle; the worker thread owns evcxr's `CommandContext` and
//! serves jobs in order, so nothing else ever touches evcxr. The child process
//! evcxr starts is this same binary with a relay in front of it (see
//! [`relay`]); the worker talks to the relay through the [`link`].
//!
//! Invariants:
//! - `execute` returns only after every byte of the cell's output was queued
//!   for IOPub (the link's sync barrier);
//! - an interrupt kills the runtime process only once user code runs (the
//!   [`run_gate`] decides, atomically, whether it came before); before that it
//!   stops cargo and rustc, keeps stopping any the cell still starts, and the
//!   cell's code never runs: no variable is lost;
//! - a build that was stopped leaves nothing half-written behind for the next
//!   cell (the session crate's incremental cache and objects are removed);
//! - when the runtime dies, the error names the variables that were lost, and
//!   the prelude is restored before the next cell;
//! - every process group the engine or a shell command starts ends with the
//!   kernel, however the kernel ends ([`crate::os::process_tree::reaper`]).

pub mod build_cleanup;
pub mod build_log;
pub mod evcxr_contract;
mod link;
pub mod link_frame;
pub mod one_compile;
mod prelude;
pub mod relay;
mod render;
pub mod run_gate;
pub mod session_build;
pub mod session_dir;
pub mod text;
pub mod toolchain;
mod worker;

use crate::kernel::{CellContext, ExecuteOutcome};
use crossbeam_channel::Sender;
use link::Link;
pub use link::RunTimes;
use session_dir::SessionDir;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

const ORDER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a shutdown waits for the process groups to end (SIGTERM, then
/// SIGKILL after two seconds).
const GROUPS_END_TIMEOUT: Duration = Duration::from_secs(3);
/// How long shutdown waits for the killed runtime to be reaped (a process
/// killed with SIGKILL is normally gone within milliseconds).
const RUNTIME_REAP_TIMEOUT: Duration = Duration::from_secs(1);
/// How often [`reap`] looks whether the child has ended.
const REAP_POLL: Duration = Duration::from_millis(5);

/// Completion candidates with byte offsets into the code.
#[derive(Debug, Clone, Default)]
pub struct CompletionSet {
    /// (text to insert, kind) pairs, without duplicates.
    pub items: Vec<(String, String)>,
    pub start: usize,
    pub end: usize,
}

/// Hover help: plain text and HTML.
#[derive(Debug, Clone)]
pub struct Hover {
    pub plain: String,
    pub html: String,
}

/// What one run of Rust code did.
pub struct CellRun {
    pub outcome: ExecuteOutcome,
    /// How long user code ran, compile time excluded.
    pub times: RunTimes,
    /// `(name, type)` of each variable lost because the runtime ended or was
    /// restarted (a crash, or an interrupt that had to kill it); empty otherwise.
    pub lost_variables: Vec<(String, String)>,
}

enum Job {
    Execute {
        code: String,
        first_line: usize,
        cell: CellContext,
        done: Sender<CellRun>,
    },
    Complete {
        code: String,
        offset: usize,
        done: Sender<Option<CompletionSet>>,
    },
    Inspect {
        code: String,
        offset: usize,
        done: Sender<Option<Hover>>,
    },
    Variables {
        done: Sender<Vec<(String, String)>>,
    },
    ItemNames {
        done: Sender<Vec<String>>,
    },
    /// evcxr commands run while no cell is there (a spare loading crates).
    Background {
        code: String,
        done: Sender<Result<(), String>>,
    },
    Shutdown {
        done: Sender<()>,
    },
}

/// State shared by the handle and the worker.
struct Shared {
    link: Link,
    process: OnceLock<Arc<Mutex<std::process::Child>>>,
    interrupt_requested: AtomicBool,
    executing: AtomicBool,
    /// Counts the cells the worker has started: an interrupt acts on the
    /// cell that ran when it arrived, never on the next one.
    cell_number: AtomicU64,
    progress: build_log::ProgressSink,
    gate: run_gate::RunGate,
    /// Set while an interrupt keeps the current cell's build stopped; the
    /// worker drops it when the cell is done, which ends the stopping.
    build_stopper: Mutex<Option<Sender<()>>>,
    /// Whether any build process was killed during the current cell.
    builds_killed: AtomicBool,
    /// Whether the current cell's interrupt already killed the runtime.
    runtime_killed: AtomicBool,
    /// Set once the worker has started evcxr and warmed it up.
    ready: AtomicBool,
    /// Run once by the worker the first time it has been idle for
    /// [`worker::IDLE_NOTICE`] after it became ready (shared with the handle,
    /// which may set it before or after the start).
    idle_hook: IdleHook,
    /// Crates rust-analyzer is not given (see `Engine::hiding_from_analysis`).
    analysis_hidden: Vec<String>,
}

type IdleHook = Arc<Mutex<Option<Box<dyn FnOnce() + Send>>>>;

/// How often a stopped cell looks for new cargo/rustc processes to end
/// (evcxr may start another build before it notices the first one died).
const BUILD_STOP_SCAN: Duration = Duration::from_millis(20);

impl Shared {
    /// Kills the runtime process group (user code and anything it spawned).
    fn kill_runtime(&self) {
        let Some(process) = self.process.get() else {
            return;
        };
        let mut child = process.lock().unwrap_or_else(|p| p.into_inner());
        // The runtime leads the group it was started in (process_group(0)).
        if !crate::os::process_tree::signal_group(child.id(), libc::SIGKILL) {
            let _ = child.kill();
        }
    }

    /// Kills the runtime and reaps it (waiting at most `timeout`). Until it is
    /// reaped the killed runtime is a zombie of this process, and a zombie
    /// keeps its group signalable: the reaper, asked to end the groups,
    /// would take it for alive and wait its whole grace period.
    fn end_runtime(&self, timeout: Duration) {
        self.kill_runtime();
        if let Some(process) = self.process.get() {
            reap(process, timeout);
        }
    }

    /// Kills the runtime for the current cell's interrupt, at most once (a
    /// second kill could hit the runtime evcxr started in its place).
    fn kill_runtime_for_interrupt(&self) {
        if !self.runtime_killed.swap(true, Ordering::SeqCst) {
            self.kill_runtime();
        }
    }

    /// Ends the build of cell `cell` and, until that cell is done, every
    /// cargo or rustc it still starts (evcxr retries builds and runs `cargo
    /// check`). Every kill happens under the `build_stopper` lock, which the
    /// worker takes to end a cell: so no kill can reach the next cell's build.
    fn stop_build(self: &Arc<Self>, cell: u64) {
        let mut stopper = self.build_stopper.lock().unwrap_or_else(|p| p.into_inner());
        if !self.runs_cell(cell) {
            return;
        }
        self.kill_build();
        if stopper.is_some() {
            return;
        }
        let (keep_going, done) = crossbeam_channel::bounded::<()>(0);
        *stopper = Some(keep_going);
        drop(stopper);
        let shared = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("ferrolab-build-stop".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    done.recv_timeout(BUILD_STOP_SCAN)
                {
                    let Some(shared) = shared.upgrade() else {
                        break;
                    };
                    let stopper = shared
                        .build_stopper
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    if stopper.is_none() || !shared.runs_cell(cell) {
                        break;
                    }
                    shared.kill_build();
                }
            });
        if let Err(error) = spawned {
            log::warn!("cannot keep the interrupted build stopped: {error}");
        }
    }

    /// Whether cell number `cell` is the one executing now.
    fn runs_cell(&self, cell: u64) -> bool {
        self.executing.load(Ordering::SeqCst) && self.cell_number.load(Ordering::SeqCst) == cell
    }

    fn runtime_pid(&self) -> Option<u32> {
        self.process
            .get()
            .map(|process| process.lock().unwrap_or_else(|p| p.into_inner()).id())
    }

    /// Stops cargo and rustc started for the current build, sparing the runtime.
    fn kill_build(&self) {
        let runtime = self.runtime_pid();
        for pid in worker::build_processes(runtime) {
            // SAFETY: plain kill(2) on a descendant of this process.
            if unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) } == 0 {
                self.builds_killed.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Acts on an interrupt of the running cell.
    fn interrupt(self: &Arc<Self>) {
        let cell = self.cell_number.load(Ordering::SeqCst);
        self.interrupt_requested.store(true, Ordering::SeqCst);
        if !self.executing.load(Ordering::SeqCst) {
            return;
        }
        match self.gate.stop() {
            run_gate::Verdict::Idle => {}
            run_gate::Verdict::BeforeUserCode => self.stop_build(cell),
            run_gate::Verdict::UserCode => {
                // If the runtime has not reported the start yet, the run-start
                // hook kills it when it does (it sees `kills_on_run`).
                if self.link.user_code_running() {
                    self.kill_runtime_for_interrupt();
                }
            }
        }
    }
}

/// Handle to the engine thread.
pub struct Engine {
    jobs: OnceLock<Sender<Job>>,
    shared: OnceLock<Arc<Shared>>,
    startup_error: OnceLock<String>,
    session: Option<SessionDir>,
    /// Holds the link socket when there is no session directory.
    fallback_dir: OnceLock<tempfile::TempDir>,
    idle_hook: IdleHook,
    analysis_hidden: Vec<String>,
}

impl Engine {
    /// A handle; nothing starts until [`start`](Self::start). The session
    /// directory (if any) is removed at shutdown.
    pub fn new(session: Option<SessionDir>) -> Self {
        Engine {
            jobs: OnceLock::new(),
            shared: OnceLock::new(),
            startup_error: OnceLock::new(),
            session,
            fallback_dir: OnceLock::new(),
            idle_hook: IdleHook::default(),
            analysis_hidden: Vec::new(),
        }
    }

    /// Crates the kernel adds to the session for its own generated code (see
    /// `evcxr_contract::hide_from_analysis`). Before [`start`](Self::start).
    pub fn hiding_from_analysis(mut self, crates: &[&str]) -> Self {
        self.analysis_hidden = crates.iter().map(|name| (*name).to_owned()).collect();
        self
    }

    fn link_path(&self) -> std::io::Result<std::path::PathBuf> {
        if let Some(session) = &self.session {
            return Ok(session.link_socket());
        }
        let dir = tempfile::Builder::new().prefix("ferrolab-").tempdir()?;
        let path = dir.path().join("link.sock");
        let _ = self.fallback_dir.set(dir);
        Ok(path)
    }

    /// Starts the worker thread, which creates the evcxr context and warms it
    /// up in the background. Idempotent.
    pub fn start(&self) {
        if self.jobs.get().is_some() || self.startup_error.get().is_some() {
            return;
        }
        let link = match self.link_path().and_then(Link::listen) {
            Ok(link) => link,
            Err(error) => {
                let _ = self
                    .startup_error
                    .set(format!("cannot create the runtime link socket: {error}"));
                return;
            }
        };
        if let Err(error) = crate::os::process_tree::reaper::start() {
            log::warn!("cannot start the process reaper: {error}");
        }
        let gate_dir = link
            .path()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        let shared = Arc::new(Shared {
            link,
            process: OnceLock::new(),
            interrupt_requested: AtomicBool::new(false),
            executing: AtomicBool::new(false),
            cell_number: AtomicU64::new(0),
            progress: Arc::new(Mutex::new(None)),
            gate: run_gate::RunGate::new(gate_dir),
            build_stopper: Mutex::new(None),
            builds_killed: AtomicBool::new(false),
            runtime_killed: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            idle_hook: self.idle_hook.clone(),
            analysis_hidden: self.analysis_hidden.clone(),
        });
        if let Err(error) = build_log::capture(shared.progress.clone()) {
            log::warn!("cannot capture cargo progress: {error}");
        }
        let hook_shared = Arc::downgrade(&shared);
        shared.link.on_run_start(Box::new(move || {
            if let Some(shared) = hook_shared.upgrade()
                && shared.executing.load(Ordering::SeqCst)
                && shared.gate.kills_on_run()
            {
                shared.kill_runtime_for_interrupt();
            }
        }));
        let (jobs, receiver) = crossbeam_channel::unbounded();
        let worker_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("ferrolab-engine".into())
            .spawn(move || worker::run(worker_shared, receiver));
        match spawned {
            Ok(_) => {
                let _ = self.jobs.set(jobs);
                let _ = self.shared.set(shared);
            }
            Err(error) => {
                let _ = self
                    .startup_error
                    .set(format!("cannot start the engine thread: {error}"));
            }
        }
    }

    fn submit<T>(&self, make: impl FnOnce(Sender<T>) -> Job) -> Option<T> {
        self.start();
        let jobs = self.jobs.get()?;
        let (done, result) = crossbeam_channel::bounded(1);
        jobs.send(make(done)).ok()?;
        result.recv().ok()
    }

    /// Runs Rust code (evcxr `:commands` included). `first_line` is the line
    /// number of `code`'s first line within the cell, for error locations.
    pub fn execute(&self, code: &str, first_line: usize, cell: &CellContext) -> ExecuteOutcome {
        self.run(code, first_line, cell).outcome
    }

    /// Like [`execute`](Self::execute), also saying how long user code ran
    /// (compile time excluded) and which variables a restarted runtime lost.
    pub fn run(&self, code: &str, first_line: usize, cell: &CellContext) -> CellRun {
        let ran = self.submit(|done| Job::Execute {
            code: code.to_owned(),
            first_line,
            cell: cell.clone(),
            done,
        });
        ran.unwrap_or_else(|| CellRun {
            outcome: self.unavailable(),
            times: RunTimes::default(),
            lost_variables: Vec::new(),
        })
    }

    fn unavailable(&self) -> ExecuteOutcome {
        let reason = self.startup_error.get().cloned().unwrap_or_else(|| {
            "the engine thread stopped unexpectedly; restart the kernel".to_owned()
        });
        ExecuteOutcome::error("EngineUnavailable", reason.clone(), vec![reason])
    }

    pub fn complete(&self, code: &str, offset: usize) -> Option<CompletionSet> {
        self.submit(|done| Job::Complete {
            code: code.to_owned(),
            offset,
            done,
        })
        .flatten()
    }

    pub fn inspect(&self, code: &str, offset: usize) -> Option<Hover> {
        self.submit(|done| Job::Inspect {
            code: code.to_owned(),
            offset,
            done,
        })
        .flatten()
    }

    /// Variables defined in the session, with their types (ferrolab's own
    /// `__ferrolab…` helpers left out).
    pub fn variables(&self) -> Vec<(String, String)> {
        self.submit(|done| Job::Variables { done })
            .unwrap_or_default()
    }

    /// Names of the items (fns, types, traits, ...) defined in the session.
    pub fn item_names(&self) -> Vec<String> {
        self.submit(|done| Job::ItemNames { done })
            .unwrap_or_default()
    }

    /// Runs evcxr commands (`:dep` lines, `:clear`) with no cell to show
    /// anything to: cargo's progress and any output are dropped. Used by a
    /// warm spare before a notebook adopts it.
    pub fn run_in_background(&self, code: &str) -> Result<(), String> {
        self.submit(|done| Job::Background {
            code: code.to_owned(),
            done,
        })
        .unwrap_or_else(|| Err("the Rust engine is not running".to_owned()))
    }

    /// Runs `hook` once, on the engine thread, the first time the engine has
    /// been idle for a moment after it started and warmed up.
    pub fn when_idle(&self, hook: Box<dyn FnOnce() + Send>) {
        *self.idle_hook.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// Whether the engine has started and warmed up (false if it failed to start).
    pub fn is_ready(&self) -> bool {
        self.shared
            .get()
            .is_some_and(|shared| shared.ready.load(Ordering::SeqCst))
    }

    /// Moves the runtime's working directory (no compile involved; answers in
    /// milliseconds, even while a build runs). A runtime started later, or
    /// restarted after a crash, starts there too.
    pub fn chdir(&self, path: &Path) -> Result<(), String> {
        self.start();
        match self.shared.get() {
            Some(shared) => shared.link.chdir(&path.to_string_lossy(), ORDER_TIMEOUT),
            None => Ok(()),
        }
    }

    /// Sets (or with `None`, removes) an environment variable in the runtime,
    /// now and in any runtime started later.
    pub fn set_env(&self, key: &str, value: Option<&str>) -> Result<(), String> {
        self.start();
        match self.shared.get() {
            Some(shared) => shared.link.set_env(key, value, ORDER_TIMEOUT),
            None => Ok(()),
        }
    }

    /// Stops the running cell: the runtime if user code runs, else the build
    /// (and the cell's code will not run).
    pub fn interrupt(&self) {
        if let Some(shared) = self.shared.get() {
            shared.interrupt();
        }
    }

    /// Kills the build, the runtime and every process group started for the
    /// session, and releases evcxr's temporary files.
    pub fn shutdown(&self) {
        let Some(shared) = self.shared.get() else {
            crate::os::process_tree::reaper::end_all(GROUPS_END_TIMEOUT);
            return;
        };
        shared.interrupt();
        shared.kill_build();
        shared.end_runtime(RUNTIME_REAP_TIMEOUT);
        crate::os::process_tree::reaper::end_all(GROUPS_END_TIMEOUT);
        let _ = self.jobs.get().map(|jobs| {
            let (done, finished) = crossbeam_channel::bounded(1);
            if jobs.send(Job::Shutdown { done }).is_ok() {
                let _ = finished.recv_timeout(Duration::from_secs(2));
            }
        });
        if let Some(session) = &self.session {
            session.remove();
        }
    }
}

/// Waits until `child` has ended and is reaped, at most `timeout`; true when
/// it was. std's `Child` keeps the exit status, so evcxr, which owns the
/// child, still reads it later.
fn reap(child: &Mutex<std::process::Child>, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let mut child = child.lock().unwrap_or_else(|p| p.into_inner());
        if !matches!(child.try_wait(), Ok(None)) {
            return true;
        }
        drop(child);
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(REAP_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::process_tree::signal_group;
    use std::os::unix::process::CommandExt;

    fn sleeper_in_its_own_group() -> Mutex<std::process::Child> {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        Mutex::new(child)
    }

    #[test]
    fn a_killed_runtime_is_reaped_so_not_even_a_zombie_keeps_its_group() {
        let child = sleeper_in_its_own_group();
        let group = child.lock().unwrap().id();
        assert!(signal_group(group, libc::SIGKILL));
        assert!(reap(&child, Duration::from_secs(30)));
        // kill(-group, 0), the reaper's test for a live group, now fails.
        assert!(!signal_group(group, 0));
        // The owner of the child still reads its exit status.
        let status = child.lock().unwrap().try_wait().unwrap();
        assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    }

    #[test]
    fn reaping_gives_up_on_a_child_that_does_not_end() {
        let child = sleeper_in_its_own_group();
        assert!(!reap(&child, Duration::from_millis(20)));
        let mut child = child.into_inner().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
