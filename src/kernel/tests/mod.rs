//! In-process tests of the kernel core: shell sessions, subshells, the IOPub
//! publisher's ordering and the cell context, in milliseconds, with no sockets
//! and no Rust compiler.
//!
//! [`Kernel`] wires [`ShellParts`] as `serve_bound` does, with two boundaries
//! replaced: the interpreter is [`Fake`] (a tiny script language, below) and
//! the sockets are a recording. IOPub messages (after the publisher's real
//! batching and ordering, see [`Publisher::recording`]) and shell replies are
//! appended to one [`Wire`] on the thread that sends them, so the record is
//! the order the kernel sent them in. Tests wait on the record (or on the
//! fake's channels) with a deadline, never on a sleep.

mod shell;

use crate::kernel::cell_context::SharedHistory;
use crate::kernel::history::History;
use crate::kernel::interpreter::{
    Completeness, Completions, ExecuteOutcome, Interpreter, KernelIdentity,
};
use crate::kernel::iopub::Publisher;
use crate::kernel::running_cells::RunningCells;
use crate::kernel::shell::{ShellParts, ShellSession};
use crate::kernel::subshells::Subshells;
use crate::kernel::transport::Mailbox;
use crate::kernel::{CellContext, StreamName};
use crate::protocol::content::MimeBundle;
use crate::protocol::{Codec, Message};
use crossbeam_channel::{Receiver, Sender};
use serde_json::{Value, json};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long a test waits for something the kernel should do at once.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The socket a recorded message left on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Iopub,
    Shell,
}

/// One message the kernel sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub channel: Channel,
    pub message: Message,
}

impl Sent {
    pub fn msg_type(&self) -> &str {
        self.message.msg_type()
    }

    /// The `msg_id` of the request this message answers or belongs to.
    pub fn parent_id(&self) -> Option<&str> {
        self.message.parent_msg_id()
    }

    pub fn is_status(&self, state: &str) -> bool {
        self.channel == Channel::Iopub
            && self.msg_type() == "status"
            && self.message.content["execution_state"] == state
    }

    pub fn is_reply(&self) -> bool {
        self.channel == Channel::Shell
    }
}

/// What a test runs on each IOPub message as it is sent, before it is recorded.
type IopubHook = Box<dyn Fn(&Message) + Send>;

/// Everything the kernel sent, in order.
#[derive(Default)]
pub struct Wire {
    log: Mutex<Vec<Sent>>,
    changed: Condvar,
    on_iopub: Mutex<Option<IopubHook>>,
}

impl Wire {
    fn lock(&self) -> MutexGuard<'_, Vec<Sent>> {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push(&self, channel: Channel, message: Message) {
        if channel == Channel::Iopub
            && let Some(hook) = self
                .on_iopub
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .as_ref()
        {
            hook(&message);
        }
        self.lock().push(Sent { channel, message });
        self.changed.notify_all();
    }

    /// Waits until `found` returns something for the record so far; panics
    /// naming `what` (and showing the record) after [`DEADLINE`].
    pub fn wait_for<T>(&self, what: &str, found: impl Fn(&[Sent]) -> Option<T>) -> T {
        let deadline = Instant::now() + DEADLINE;
        let mut log = self.lock();
        loop {
            if let Some(value) = found(&log) {
                return value;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "gave up waiting for {what}; sent: {:#?}",
                summary(&log)
            );
            log = self
                .changed
                .wait_timeout(log, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Waits for the reply to `request` and returns it.
    pub fn reply_to(&self, request: &Message) -> Message {
        let id = request.header.msg_id.clone();
        self.wait_for(&format!("the reply to {id}"), |log| {
            log.iter()
                .find(|sent| sent.is_reply() && sent.parent_id() == Some(&id))
                .map(|sent| sent.message.clone())
        })
    }

    /// Waits for `request`'s `idle`, then returns everything sent so far.
    pub fn after_idle(&self, request: &Message) -> Vec<Sent> {
        let id = request.header.msg_id.clone();
        self.wait_for(&format!("idle after {id}"), |log| {
            log.iter()
                .any(|sent| sent.is_status("idle") && sent.parent_id() == Some(&id))
                .then(|| log.to_vec())
        })
    }

    /// Runs `hook` on every IOPub message as the kernel sends it (on the
    /// sending thread, before the message is recorded).
    pub fn on_iopub(&self, hook: impl Fn(&Message) + Send + 'static) {
        *self
            .on_iopub
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Box::new(hook));
    }

    pub fn snapshot(&self) -> Vec<Sent> {
        self.lock().clone()
    }
}

/// One line per message, for failure reports.
pub fn summary(log: &[Sent]) -> Vec<String> {
    log.iter()
        .map(|sent| {
            format!(
                "{:?} {} {} parent={}",
                sent.channel,
                sent.msg_type(),
                sent.message.content,
                sent.parent_id().unwrap_or("-")
            )
        })
        .collect()
}

/// What was sent for `request` (its parent), in order.
pub fn for_request<'a>(log: &'a [Sent], request: &Message) -> Vec<&'a Sent> {
    let id = request.header.msg_id.as_str();
    log.iter()
        .filter(|sent| sent.parent_id() == Some(id))
        .collect()
}

/// The fake interpreter. A cell is lines of commands:
/// `out TEXT` / `err TEXT` write `TEXT\n` to stdout / stderr; `result TEXT`
/// makes `TEXT` the cell's `text/plain` result; `fail` ends the cell with an
/// error; `cancelled` writes whether the cell has been interrupted; `wait`
/// says so on [`Fake::started`]'s channel, then blocks until the test sends
/// on `release` (or drops it). It records every cell it runs.
pub struct Fake {
    ran: Mutex<Vec<String>>,
    started: Sender<String>,
    release: Receiver<()>,
}

/// The test's ends of the fake's `wait` channels.
pub struct Gate {
    /// The code of each cell that reached `wait`.
    pub started: Receiver<String>,
    pub release: Sender<()>,
}

impl Fake {
    pub fn new() -> (Arc<Fake>, Gate) {
        let (started, started_rx) = crossbeam_channel::unbounded();
        let (release_tx, release) = crossbeam_channel::unbounded();
        let fake = Fake {
            ran: Mutex::default(),
            started,
            release,
        };
        let gate = Gate {
            started: started_rx,
            release: release_tx,
        };
        (Arc::new(fake), gate)
    }

    /// The code of every cell run so far, in the order they started.
    pub fn ran(&self) -> Vec<String> {
        self.ran
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl Interpreter for Fake {
    fn identity(&self) -> KernelIdentity {
        KernelIdentity {
            language_version: "fake".into(),
            banner: "fake".into(),
            help_links: Vec::new(),
        }
    }

    fn execute(&self, code: &str, cell: &CellContext) -> ExecuteOutcome {
        self.ran
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(code.to_owned());
        let mut result = None;
        for line in code.lines() {
            let (command, text) = line.split_once(' ').unwrap_or((line, ""));
            match command {
                "out" => cell.stream(StreamName::Stdout, &format!("{text}\n")),
                "err" => cell.stream(StreamName::Stderr, &format!("{text}\n")),
                "result" => {
                    let mut bundle = MimeBundle::new();
                    bundle.insert("text/plain".into(), text.into());
                    result = Some(bundle);
                }
                "cancelled" => cell.stream(
                    StreamName::Stdout,
                    &format!("cancelled: {}\n", cell.is_cancelled()),
                ),
                "fail" => return ExecuteOutcome::error("Failed", text, vec![]),
                "wait" => {
                    let _ = self.started.send(code.to_owned());
                    let _ = self.release.recv();
                }
                other => panic!("the fake interpreter has no command {other:?}"),
            }
        }
        ExecuteOutcome::Ok {
            result,
            payload: Vec::new(),
        }
    }

    fn complete(&self, _code: &str, cursor: usize) -> Completions {
        Completions {
            matches: vec!["fake".into()],
            cursor_start: cursor,
            cursor_end: cursor,
            types: Vec::new(),
        }
    }

    fn inspect(&self, _code: &str, _cursor: usize, _detail_level: u8) -> Option<MimeBundle> {
        None
    }

    fn is_complete(&self, _code: &str) -> Completeness {
        Completeness::Complete
    }

    fn interrupt(&self) {}

    fn shutdown(&self) {}
}

/// The kernel core with a fake interpreter and recorded sockets.
pub struct Kernel {
    pub wire: Arc<Wire>,
    pub fake: Arc<Fake>,
    pub gate: Gate,
    parts: ShellParts,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Kernel {
    pub fn new() -> Kernel {
        let wire = Arc::new(Wire::default());
        let (fake, gate) = Fake::new();
        let codec = Codec::new("in-process-test-key");
        let publisher = {
            let wire = wire.clone();
            Publisher::recording(Arc::from("kernel-session"), move |message| {
                wire.push(Channel::Iopub, message)
            })
        };
        let replies = {
            let (wire, codec) = (wire.clone(), codec.clone());
            Mailbox::from_fn(move |frames| {
                let reply = codec.decode(frames).expect("a reply the kernel signed");
                wire.push(Channel::Shell, reply);
                true
            })
        };
        let parts = ShellParts {
            interpreter: fake.clone(),
            publisher,
            replies,
            codec,
            stdin: Mailbox::from_fn(|_| false),
            running: RunningCells::default(),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        Kernel {
            wire,
            fake,
            gate,
            parts,
            runtime: Some(runtime),
        }
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the runtime runs until drop")
    }

    /// The cancel flags an interrupt marks (as the control channel does).
    pub fn running(&self) -> RunningCells {
        self.parts.running.clone()
    }

    /// Starts a main shell session; requests sent on the returned queue
    /// reach it in order.
    pub fn shell(&self) -> mpsc::UnboundedSender<Message> {
        let (queue, requests) = mpsc::unbounded_channel();
        let session = ShellSession::new(self.parts.clone(), None, memory_history());
        self.runtime().spawn(session.run(requests));
        queue
    }

    /// Starts the shell socket's router (main shell and subshells), as the
    /// kernel does; requests sent on the returned queue are routed by their
    /// `subshell_id`.
    pub fn subshells(&self) -> (Subshells, mpsc::UnboundedSender<Message>) {
        let (queue, requests) = mpsc::unbounded_channel();
        let subshells = Subshells::new(self.parts.clone());
        let _entered = self.runtime().enter();
        subshells.serve(requests, memory_history());
        (subshells, queue)
    }

    /// Creates a child subshell (its session runs on the kernel's runtime).
    pub fn create_subshell(&self, subshells: &Subshells) -> String {
        let _entered = self.runtime().enter();
        subshells.create()
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        // Unblocks a cell left waiting (a failed test), then stops the tasks.
        let (release, _) = crossbeam_channel::unbounded();
        drop(std::mem::replace(&mut self.gate.release, release));
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn memory_history() -> SharedHistory {
    Arc::new(Mutex::new(History::open(None)))
}

/// A request from a client, as the shell socket's thread would queue it.
pub fn request(msg_type: &str, content: Value) -> Message {
    let mut message = Message::new(msg_type, "client-session", content, json!({}));
    message.header.username = "client".into();
    message.raw_header = serde_json::to_value(&message.header).expect("a header is JSON");
    message
}

/// An `execute_request` for `code` with the defaults a notebook sends
/// (`stop_on_error: true`).
pub fn execute(code: &str) -> Message {
    request(
        "execute_request",
        json!({"code": code, "silent": false, "store_history": true,
               "user_expressions": {}, "allow_stdin": false, "stop_on_error": true}),
    )
}

/// The same request addressed to subshell `id`.
pub fn on_subshell(mut message: Message, id: &str) -> Message {
    message.header.subshell_id = Some(id.to_owned());
    message.raw_header = serde_json::to_value(&message.header).expect("a header is JSON");
    message
}
