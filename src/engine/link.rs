//! The kernel side of the private socket to evcxr's child process.
//!
//! A listener in a fresh 0700 directory accepts each child (a new one after
//! every crash or restart). One reader thread per connection turns frames into
//! cell output on the current [`CellContext`], tracks whether user code is
//! running, and passes `Pong`/`OrderDone` to whoever waits for them.
//!
//! [`Link::sync`] is the output barrier: it returns once every byte the child
//! produced before the call has been handed to IOPub.

use crate::engine::link_frame::{self, FromChild, Notice, Order};
use crate::engine::text::Utf8Stream;
use crate::kernel::{CellContext, StreamName};
use crossbeam_channel::{Receiver, Sender};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A panic reported by the prelude's hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanicReport {
    pub thread: String,
    pub message: String,
}

enum Answer {
    Pong { connection: u64, seq: u64 },
    OrderDone { id: u64, error: Option<String> },
    Closed { connection: u64 },
}

/// Called when the child starts running user code while an interrupt waits.
pub type RunStartHook = Box<dyn Fn() + Send + Sync>;

struct Shared {
    writer: Mutex<Option<(u64, UnixStream)>>,
    sink: Mutex<Option<CellContext>>,
    panic: Mutex<Option<PanicReport>>,
    running: AtomicBool,
    on_run_start: Mutex<Option<RunStartHook>>,
}

pub struct Link {
    path: PathBuf,
    shared: Arc<Shared>,
    answers: Receiver<Answer>,
    next_seq: AtomicU64,
}

impl Link {
    /// Creates the socket at `path` (in a private directory) and starts
    /// accepting children.
    pub fn listen(path: PathBuf) -> std::io::Result<Link> {
        let listener = UnixListener::bind(&path)?;
        let shared = Arc::new(Shared {
            writer: Mutex::new(None),
            sink: Mutex::new(None),
            panic: Mutex::new(None),
            running: AtomicBool::new(false),
            on_run_start: Mutex::new(None),
        });
        let (answers_tx, answers) = crossbeam_channel::unbounded();
        let accept_shared = shared.clone();
        std::thread::Builder::new()
            .name("ferrolab-link".into())
            .spawn(move || accept_loop(listener, accept_shared, answers_tx))?;
        Ok(Link {
            path,
            shared,
            answers,
            next_seq: AtomicU64::new(1),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where output goes from now on (the running cell).
    pub fn set_sink(&self, cell: &CellContext) {
        *lock(&self.shared.sink) = Some(cell.clone());
    }

    /// Runs `hook` whenever the child starts running user code.
    pub fn on_run_start(&self, hook: RunStartHook) {
        *lock(&self.shared.on_run_start) = Some(hook);
    }

    /// True while the child runs user code (between RunStarted and RunFinished).
    pub fn user_code_running(&self) -> bool {
        self.shared.running.load(Ordering::SeqCst)
    }

    /// Publishes text on the current cell (for output that bypasses the relay).
    pub fn emit(&self, name: StreamName, text: &str) {
        if let Some(cell) = lock(&self.shared.sink).as_ref() {
            cell.stream(name, text);
        }
    }

    pub fn take_panic(&self) -> Option<PanicReport> {
        lock(&self.shared.panic).take()
    }

    /// Waits until all output the child wrote before this call was published.
    /// Returns false if the child did not answer within `timeout`.
    pub fn sync(&self, timeout: Duration) -> bool {
        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
        let connection = match self.send(&Order::Ping { seq }) {
            Some(connection) => connection,
            None => return true, // no child connected: nothing can be in flight
        };
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.answers.recv_timeout(remaining) {
                Ok(Answer::Pong {
                    connection: from,
                    seq: got,
                }) if from == connection && got == seq => return true,
                Ok(Answer::Closed { connection: closed }) if closed == connection => return true,
                Ok(_) => continue,
                Err(_) => {
                    log::warn!("link: the Rust runtime did not answer a sync within {timeout:?}");
                    return false;
                }
            }
        }
    }

    /// Runs an order in the child (chdir, set_env) and waits for its result.
    pub fn order(&self, make: impl FnOnce(u64) -> Order, timeout: Duration) -> Result<(), String> {
        let id = self.next_seq.fetch_add(1, Ordering::SeqCst);
        let connection = self
            .send(&make(id))
            .ok_or_else(|| "the Rust runtime is not connected".to_owned())?;
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.answers.recv_timeout(remaining) {
                Ok(Answer::OrderDone { id: got, error }) if got == id => {
                    return error.map_or(Ok(()), Err);
                }
                Ok(Answer::Closed { connection: closed }) if closed == connection => {
                    return Err("the Rust runtime exited".to_owned());
                }
                Ok(_) => continue,
                Err(_) => {
                    return Err(format!(
                        "the Rust runtime did not answer within {timeout:?}"
                    ));
                }
            }
        }
    }

    fn send(&self, order: &Order) -> Option<u64> {
        let mut writer = lock(&self.shared.writer);
        let (connection, stream) = writer.as_mut()?;
        let connection = *connection;
        if link_frame::write_json(stream, order).is_err() {
            *writer = None;
            return None;
        }
        Some(connection)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn accept_loop(listener: UnixListener, shared: Arc<Shared>, answers: Sender<Answer>) {
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
        let writer = match stream.try_clone() {
            Ok(writer) => writer,
            Err(error) => {
                log::warn!("link: cannot use connection: {error}");
                continue;
            }
        };
        *lock(&shared.writer) = Some((connection, writer));
        shared.running.store(false, Ordering::SeqCst);
        let reader_shared = shared.clone();
        let reader_answers = answers.clone();
        let spawned = std::thread::Builder::new()
            .name("ferrolab-link-reader".into())
            .spawn(move || read_loop(connection, stream, reader_shared, reader_answers));
        if let Err(error) = spawned {
            log::warn!("link: cannot start reader: {error}");
        }
    }
}

fn read_loop(
    connection: u64,
    mut stream: UnixStream,
    shared: Arc<Shared>,
    answers: Sender<Answer>,
) {
    let mut stdout = Utf8Stream::default();
    let mut stderr = Utf8Stream::default();
    let emit = |name: StreamName, text: &str| {
        if !text.is_empty()
            && let Some(cell) = lock(&shared.sink).as_ref()
        {
            cell.stream(name, text);
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
                Notice::RunFinished => {
                    emit(StreamName::Stdout, &stdout.finish());
                    emit(StreamName::Stderr, &stderr.finish());
                    shared.running.store(false, Ordering::SeqCst);
                }
                Notice::Pong { seq } => {
                    let _ = answers.send(Answer::Pong { connection, seq });
                }
                Notice::OrderDone { id, error } => {
                    let _ = answers.send(Answer::OrderDone { id, error });
                }
                Notice::Display {
                    data,
                    metadata,
                    display_id,
                    update,
                } => {
                    if let Some(cell) = lock(&shared.sink).as_ref() {
                        match (update, display_id) {
                            (true, Some(id)) => cell.update_display(data, metadata, &id),
                            (_, id) => cell.display(data, metadata, id.as_deref()),
                        }
                    }
                }
                Notice::ClearOutput { wait } => {
                    if let Some(cell) = lock(&shared.sink).as_ref() {
                        cell.clear_output(wait);
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
    let _ = answers.send(Answer::Closed { connection });
}
