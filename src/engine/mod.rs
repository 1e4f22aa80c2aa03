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
//! - an interrupt kills the runtime process only while user code runs; during
//!   a build it stops cargo instead, and no variable is lost;
//! - when the runtime dies, the error names the variables that were lost, and
//!   the prelude is restored before the next cell.

pub mod build_log;
mod link;
pub mod link_frame;
mod prelude;
pub mod relay;
mod render;
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

const ORDER_TIMEOUT: Duration = Duration::from_secs(5);

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

enum Job {
    Execute {
        code: String,
        first_line: usize,
        cell: CellContext,
        done: Sender<(ExecuteOutcome, RunTimes)>,
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
    progress: build_log::ProgressSink,
}

impl Shared {
    /// Kills the runtime process group (user code and anything it spawned).
    fn kill_runtime(&self) {
        let Some(process) = self.process.get() else {
            return;
        };
        let mut child = process.lock().unwrap_or_else(|p| p.into_inner());
        let pid = child.id() as libc::pid_t;
        // SAFETY: signalling a process group we created (process_group(0)).
        if unsafe { libc::kill(-pid, libc::SIGKILL) } != 0 {
            let _ = child.kill();
        }
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
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
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
        }
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
        let shared = Arc::new(Shared {
            link,
            process: OnceLock::new(),
            interrupt_requested: AtomicBool::new(false),
            executing: AtomicBool::new(false),
            progress: Arc::new(Mutex::new(None)),
        });
        if let Err(error) = build_log::capture(shared.progress.clone()) {
            log::warn!("cannot capture cargo progress: {error}");
        }
        let hook_shared = Arc::downgrade(&shared);
        shared.link.on_run_start(Box::new(move || {
            if let Some(shared) = hook_shared.upgrade()
                && shared.interrupt_requested.load(Ordering::SeqCst)
                && shared.executing.load(Ordering::SeqCst)
            {
                shared.kill_runtime();
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
        self.execute_timed(code, first_line, cell).0
    }

    /// Like [`execute`](Self::execute), also returning how long user code ran
    /// (compile time excluded).
    pub fn execute_timed(
        &self,
        code: &str,
        first_line: usize,
        cell: &CellContext,
    ) -> (ExecuteOutcome, RunTimes) {
        let outcome = self.submit(|done| Job::Execute {
            code: code.to_owned(),
            first_line,
            cell: cell.clone(),
            done,
        });
        outcome.unwrap_or_else(|| (self.unavailable(), RunTimes::default()))
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

    /// Stops the running cell: the runtime if user code runs, else the build.
    pub fn interrupt(&self) {
        let Some(shared) = self.shared.get() else {
            return;
        };
        shared.interrupt_requested.store(true, Ordering::SeqCst);
        if !shared.executing.load(Ordering::SeqCst) {
            return;
        }
        if shared.link.user_code_running() {
            shared.kill_runtime();
        } else {
            shared.kill_build();
        }
    }

    /// Kills the runtime and releases evcxr's temporary files.
    pub fn shutdown(&self) {
        let Some(shared) = self.shared.get() else {
            return;
        };
        shared.interrupt_requested.store(true, Ordering::SeqCst);
        shared.kill_build();
        shared.kill_runtime();
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
