//! The kernel side of the private socket to evcxr's child process.
//!
//! A listener in the session directory accepts each child (a new one after
//! every crash or restart). One reader thread per connection turns frames into
//! cell output on the current [`CellContext`], tracks whether user code is
//! running and how long it ran, and hands `Pong`/`OrderDone` answers to
//! whoever waits for that id — so orders may come from any thread.
//!
//! The working directory and environment set through the link are
//! remembered and replayed to every new child, so a runtime restarted after a
//! crash is where the user left the old one.
//!
//! [`Link::sync`] is the output barrier: it returns once every byte the child
//! produced before the call has been handed to IOPub.
//!
//! Backpressure: publishing waits while the kernel's output budget is spent,
//! so the reader stops reading, the socket fills and the child's relay (then
//! the user's `println!`) waits too. No lock is held while publishing.

use crate::engine::link_frame::{self, FromChild, Notice, Order};
use crate::engine::text::Utf8Stream;
use crate::kernel::{CellContext, StreamName};
use crossbeam_channel::Sender;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A panic reported by the prelude's hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanicReport {
    pub thread: String,
    pub message: String,
}

/// Time spent running user code (summed over the runs of one cell).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunTimes {
    pub runs: u32,
    pub wall: Duration,
    pub user: Duration,
    pub system: Duration,
}

enum Answer {
    Done(Option<String>),
    Closed,
}

/// Called when the child starts running user code.
pub type RunStartHook = Box<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct ChildState {
    cwd: Option<String>,
    env: BTreeMap<String, Option<String>>,
}

struct Shared {
    writer: Mutex<Option<(u64, UnixStream)>>,
    waiting: Mutex<HashMap<u64, (u64, Sender<Answer>)>>,
    sink: Mutex<Option<CellContext>>,
    panic: Mutex<Option<PanicReport>>,
    /// Set when the running cell's code returned an error through `?`.
    user_error: AtomicBool,
    times: Mutex<RunTimes>,
    running: AtomicBool,
    on_run_start: Mutex<Option<RunStartHook>>,
    child_state: Mutex<ChildState>,
    next_id: AtomicU64,
}

pub struct Link {
    path: PathBuf,
    shared: Arc<Shared>,
}

impl Link {
    /// Creates the socket at `path` (in a private directory) and starts
    /// accepting children.
    pub fn listen(path: PathBuf) -> std::io::Result<Link> {
        let listener = UnixListener::bind(&path)?;
        let shared = Arc::new(Shared {
            writer: Mutex::new(None),
            waiting: Mutex::new(HashMap::new()),
            sink: Mutex::new(None),
            panic: Mutex::new(None),
            user_error: AtomicBool::new(false),
            times: Mutex::new(RunTimes::default()),
            running: AtomicBool::new(false),
            on_run_start: Mutex::new(None),
            child_state: Mutex::new(ChildState::default()),
            next_id: AtomicU64::new(1),
        });
        let accept_shared = shared.clone();
        std::thread::Builder::new()
            .name("ferrolab-link".into())
            .spawn(move || accept_loop(listener, accept_shared))?;
        Ok(Link { path, shared })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where output goes from now on (the running cell).
    pub fn set_sink(&self, cell: &CellContext) {
        *lock(&self.shared.sink) = Some(cell.clone());
    }

    /// Publishes text on the current cell (for output that bypasses the relay).
    pub fn emit(&self, name: StreamName, text: &str) {
        if let Some(cell) = current_cell(&self.shared) {
            cell.stream(name, text);
        }
    }

    /// Runs `hook` whenever the child starts running user code.
    pub fn on_run_start(&self, hook: RunStartHook) {
        *lock(&self.shared.on_run_start) = Some(hook);
    }

    /// True while the child runs user code (between RunStarted and RunFinished).
    pub fn user_code_running(&self) -> bool {
        self.shared.running.load(Ordering::SeqCst)
    }

    pub fn take_panic(&self) -> Option<PanicReport> {
        lock(&self.shared.panic).take()
    }

    /// Whether the cell's code returned an error through `?` since the last
    /// call (evcxr reports such a cell as a success).
    pub fn take_user_error(&self) -> bool {
        self.shared.user_error.swap(false, Ordering::SeqCst)
    }

    /// Returns the run times gathered since the last call, and resets them.
    pub fn take_times(&self) -> RunTimes {
        std::mem::take(&mut *lock(&self.shared.times))
    }

    /// Waits until all output the child wrote before this call was published.
    /// Returns false if the child did not answer within `timeout`.
    pub fn sync(&self, timeout: Duration) -> bool {
        match self.request(|seq| Order::Ping { seq }, timeout) {
            Ok(_) | Err(RequestError::NotConnected) | Err(RequestError::Closed) => true,
            Err(RequestError::TimedOut) => {
                log::warn!("link: the Rust runtime did not answer a sync within {timeout:?}");
                false
            }
        }
    }

    /// Moves the runtime's working directory; remembered for future runtimes.
    pub fn chdir(&self, path: &str, timeout: Duration) -> Result<(), String> {
        lock(&self.shared.child_state).cwd = Some(path.to_owned());
        let path = path.to_owned();
        self.apply(|id| Order::Chdir { id, path }, timeout)
    }

    /// Sets (or removes) a variable in the runtime; remembered for future runtimes.
    pub fn set_env(&self, key: &str, value: Option<&str>, timeout: Duration) -> Result<(), String> {
        lock(&self.shared.child_state)
            .env
            .insert(key.to_owned(), value.map(str::to_owned));
        let (key, value) = (key.to_owned(), value.map(str::to_owned));
        self.apply(|id| Order::SetEnv { id, key, value }, timeout)
    }

    fn apply(&self, make: impl FnOnce(u64) -> Order, timeout: Duration) -> Result<(), String> {
        match self.request(make, timeout) {
            Ok(None) => Ok(()),
            Ok(Some(error)) => Err(error),
            // Not connected yet: the order is replayed when the runtime connects.
            Err(RequestError::NotConnected) => Ok(()),
            Err(RequestError::Closed) => Err("the Rust runtime exited".to_owned()),
            Err(RequestError::TimedOut) => Err(format!(
                "the Rust runtime did not answer within {timeout:?}"
            )),
        }
    }

    fn request(
        &self,
        make: impl FnOnce(u64) -> Order,
        timeout: Duration,
    ) -> Result<Option<String>, RequestError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::SeqCst);
        let (answer_tx, answer_rx) = crossbeam_channel::bounded(1);
        {
            let mut writer = lock(&self.shared.writer);
            let Some((connection, stream)) = writer.as_mut() else {
                return Err(RequestError::NotConnected);
            };
            lock(&self.shared.waiting).insert(id, (*connection, answer_tx));
            if link_frame::write_json(stream, &make(id)).is_err() {
                lock(&self.shared.waiting).remove(&id);
                *writer = None;
                return Err(RequestError::Closed);
            }
        }
        let answer = answer_rx.recv_timeout(timeout);
        lock(&self.shared.waiting).remove(&id);
        match answer {
            Ok(Answer::Done(error)) => Ok(error),
            Ok(Answer::Closed) => Err(RequestError::Closed),
            Err(_) => Err(RequestError::TimedOut),
        }
    }
}

enum RequestError {
    NotConnected,
    Closed,
    TimedOut,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The cell output goes to now, taken out of the lock: publishing may wait
/// for the output budget, and must not hold up whoever sets the next sink.
fn current_cell(shared: &Shared) -> Option<CellContext> {
    lock(&shared.sink).clone()
}

fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    let mut connection = 0u64;
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(error) => {
                log::warn!("link: accept failed: {error}");
                continue;
            }
        };
        connection += 1;
        let mut writer = match stream.try_clone() {
            Ok(writer) => writer,
            Err(error) => {
                log::warn!("link: cannot use connection: {error}");
                continue;
            }
        };
        replay_state(&shared, &mut writer);
        *lock(&shared.writer) = Some((connection, writer));
        shared.running.store(false, Ordering::SeqCst);
        let reader_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("ferrolab-link-reader".into())
            .spawn(move || read_loop(connection, stream, reader_shared));
        if let Err(error) = spawned {
            log::warn!("link: cannot start reader: {error}");
        }
    }
}

/// A new runtime gets the directory and environment the user set before.
/// Fire and forget: the relay runs orders before it reads any command.
fn replay_state(shared: &Shared, writer: &mut UnixStream) {
    let state = lock(&shared.child_state);
    let mut orders = Vec::new();
    if let Some(path) = &state.cwd {
        orders.push(Order::Chdir {
            id: 0,
            path: path.clone(),
        });
    }
    for (key, value) in &state.env {
        orders.push(Order::SetEnv {
            id: 0,
            key: key.clone(),
            value: value.clone(),
        });
    }
    for order in orders {
        if let Err(error) = link_frame::write_json(writer, &order) {
            log::warn!("link: could not restore the runtime's state: {error}");
        }
    }
}

fn answer(shared: &Shared, id: u64, value: Answer) {
    if let Some((_, sender)) = lock(&shared.waiting).remove(&id) {
        let _ = sender.send(value);
    }
}

fn read_loop(connection: u64, mut stream: UnixStream, shared: Arc<Shared>) {
    let mut stdout = Utf8Stream::default();
    let mut stderr = Utf8Stream::default();
    let emit = |name: StreamName, text: &str| {
        if text.is_empty() {
            return;
        }
        match current_cell(&shared) {
            Some(cell) => cell.stream(name, text),
            // Before the first cell (engine start-up) there is no cell to show
            // it in; the log keeps it, e.g. why the runtime could not start.
            None => log::warn!("Rust runtime {}: {}", name.as_str(), text.trim_end()),
        }
    };
    loop {
        let frame = match link_frame::read_from_child(&mut stream) {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(error) => {
                log::warn!("link: bad frame from the Rust runtime: {error}");
                break;
            }
        };
        match frame {
            FromChild::Stdout(bytes) => emit(StreamName::Stdout, &stdout.decode(&bytes)),
            FromChild::Stderr(bytes) => emit(StreamName::Stderr, &stderr.decode(&bytes)),
            FromChild::Notice(notice) => match notice {
                Notice::Hello { pid } => log::debug!("link: runtime {pid} connected"),
                Notice::RunStarted => {
                    shared.running.store(true, Ordering::SeqCst);
                    if let Some(hook) = lock(&shared.on_run_start).as_ref() {
                        hook();
                    }
                }
                Notice::RunFinished {
                    wall_ns,
                    user_ns,
                    system_ns,
                } => {
                    emit(StreamName::Stdout, &stdout.finish());
                    emit(StreamName::Stderr, &stderr.finish());
                    let mut times = lock(&shared.times);
                    times.runs += 1;
                    times.wall += Duration::from_nanos(wall_ns);
                    times.user += Duration::from_nanos(user_ns);
                    times.system += Duration::from_nanos(system_ns);
                    drop(times);
                    shared.running.store(false, Ordering::SeqCst);
                }
                Notice::Pong { seq } => answer(&shared, seq, Answer::Done(None)),
                Notice::OrderDone { id, error } => answer(&shared, id, Answer::Done(error)),
                Notice::Display {
                    data,
                    metadata,
                    display_id,
                    update,
                } => {
                    if let Some(cell) = current_cell(&shared) {
                        match (update, display_id) {
                            (true, Some(id)) => cell.update_display(data, metadata, &id),
                            (_, id) => cell.display(data, metadata, id.as_deref()),
                        }
                    }
                }
                Notice::ClearOutput { wait } => {
                    if let Some(cell) = current_cell(&shared) {
                        cell.clear_output(wait);
                    }
                }
                Notice::UserError => {
                    if shared.running.load(Ordering::SeqCst) {
                        shared.user_error.store(true, Ordering::SeqCst);
                    }
                }
                Notice::Panic { thread, message } => {
                    if thread == "main" && shared.running.load(Ordering::SeqCst) {
                        *lock(&shared.panic) = Some(PanicReport { thread, message });
                    } else {
                        emit(
                            StreamName::Stderr,
                            &format!("thread '{thread}' panicked: {message}\n"),
                        );
                    }
                }
            },
        }
    }
    emit(StreamName::Stdout, &stdout.finish());
    emit(StreamName::Stderr, &stderr.finish());
    {
        let mut writer = lock(&shared.writer);
        if writer
            .as_ref()
            .is_some_and(|(current, _)| *current == connection)
        {
            *writer = None;
            shared.running.store(false, Ordering::SeqCst);
        }
    }
    let closed: Vec<u64> = lock(&shared.waiting)
        .iter()
        .filter(|(_, (from, _))| *from == connection)
        .map(|(id, _)| *id)
        .collect();
    for id in closed {
        answer(&shared, id, Answer::Closed);
    }
}
