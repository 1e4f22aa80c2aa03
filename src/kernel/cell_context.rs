//! What a running cell may do to the outside world, handed to the interpreter.
//!
//! Output goes through the IOPub [`Publisher`] with the execute request as
//! parent; input goes through the stdin channel when the frontend allowed it.
//! Cloneable and `Send`, so helper threads (an output relay, a shell command's
//! reader) can publish for the cell that started them.
//!
//! Output calls (`stream`, `display`, …) wait while the kernel's output budget
//! is spent (see `output_budget`): that is how a flood slows its producer
//! instead of growing the kernel. Call them from blocking threads only. Once
//! the cell is interrupted they no longer wait: output that finds no room is
//! dropped and counted ([`CellContext::dropped_output`]) for a note.

use crate::kernel::history::History;
use crate::kernel::iopub::Publisher;
use crate::kernel::stdin::InputCall;
use crate::kernel::transport::Mailbox;
use crate::protocol::Message;
use crate::protocol::content::{
    self, ClearOutput, DisplayData, HistoryRequest, InputRequest, MimeBundle,
};
use bytes::Bytes;
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The two output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamName {
    Stdout,
    Stderr,
}

impl StreamName {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamName::Stdout => "stdout",
            StreamName::Stderr => "stderr",
        }
    }
}

/// Why `input` returned no line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("this frontend does not accept input (the request had allow_stdin = false)")]
    NotAllowed,
    #[error("interrupted while waiting for input")]
    Interrupted,
    #[error("the stdin channel is closed")]
    Disconnected,
}

/// Where `input_request`s go for the current cell.
#[derive(Clone)]
pub struct StdinRoute {
    pub calls: Mailbox<InputCall>,
    pub identities: Vec<Bytes>,
}

/// The kernel's history, shared with cells (for `%history`).
pub type SharedHistory = Arc<Mutex<History>>;

struct Inner {
    publisher: Publisher,
    history: SharedHistory,
    parent: Value,
    stdin: Option<StdinRoute>,
    cancelled: Arc<AtomicBool>,
    execution_count: u64,
    silent: bool,
    /// Bytes of output dropped after an interrupt.
    dropped: AtomicUsize,
}

/// The running cell's handle on IOPub, stdin and cancellation.
#[derive(Clone)]
pub struct CellContext {
    inner: Arc<Inner>,
}

impl CellContext {
    pub fn new(
        publisher: Publisher,
        history: SharedHistory,
        parent: Value,
        stdin: Option<StdinRoute>,
        cancelled: Arc<AtomicBool>,
        execution_count: u64,
        silent: bool,
    ) -> Self {
        CellContext {
            inner: Arc::new(Inner {
                publisher,
                history,
                parent,
                stdin,
                cancelled,
                execution_count,
                silent,
                dropped: AtomicUsize::new(0),
            }),
        }
    }

    pub fn execution_count(&self) -> u64 {
        self.inner.execution_count
    }

    pub fn is_silent(&self) -> bool {
        self.inner.silent
    }

    /// The execute request's header (outputs are parented to it).
    pub fn parent(&self) -> &Value {
        &self.inner.parent
    }

    pub fn stream(&self, name: StreamName, text: &str) {
        let queued = self
            .inner
            .publisher
            .stream(&self.inner.parent, name.as_str(), text, || {
                self.is_cancelled()
            });
        if !queued {
            self.count_dropped(text.len());
        }
    }

    /// Bytes of output dropped because the cell was interrupted while output
    /// was still waiting for the client.
    pub fn dropped_output(&self) -> usize {
        self.inner.dropped.load(Ordering::SeqCst)
    }

    fn count_dropped(&self, bytes: usize) {
        self.inner.dropped.fetch_add(bytes, Ordering::SeqCst);
    }

    fn publish_output(&self, msg_type: &str, content: Value) {
        let publisher = &self.inner.publisher;
        let queued = publisher.publish_output(msg_type, content, &self.inner.parent, || {
            self.is_cancelled()
        });
        if let Err(bytes) = queued {
            self.count_dropped(bytes);
        }
    }

    /// Publishes `display_data`; a `display_id` makes it updatable.
    pub fn display(
        &self,
        data: MimeBundle,
        metadata: Map<String, Value>,
        display_id: Option<&str>,
    ) {
        let content = DisplayData {
            data,
            metadata,
            transient: transient(display_id),
        };
        self.publish_output("display_data", content::to_value(&content));
    }

    /// Replaces an earlier display with the same id.
    pub fn update_display(&self, data: MimeBundle, metadata: Map<String, Value>, display_id: &str) {
        let content = DisplayData {
            data,
            metadata,
            transient: transient(Some(display_id)),
        };
        self.publish_output("update_display_data", content::to_value(&content));
    }

    pub fn clear_output(&self, wait: bool) {
        self.publish_output("clear_output", content::to_value(&ClearOutput { wait }));
    }

    /// Blocks until everything published so far has been sent.
    pub fn flush(&self) {
        self.inner.publisher.flush_blocking();
    }

    /// Entries of the kernel's history, as a `history_request` would return.
    pub fn history(&self, request: &HistoryRequest) -> Vec<Value> {
        self.inner
            .history
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .query(request)
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// True when the frontend allowed `input_request`s for this cell.
    pub fn allows_input(&self) -> bool {
        self.inner.stdin.is_some()
    }

    /// Asks the frontend for a line of input and blocks until it answers, the
    /// cell is interrupted, or the channel closes.
    pub fn input(&self, prompt: &str, password: bool) -> Result<String, InputError> {
        let Some(route) = &self.inner.stdin else {
            return Err(InputError::NotAllowed);
        };
        self.flush();
        let mut request = Message::new(
            "input_request",
            self.inner.publisher.session(),
            content::to_value(&InputRequest {
                prompt: prompt.to_owned(),
                password,
            }),
            self.inner.parent.clone(),
        );
        request.identities = route.identities.clone();
        // JEP 91: a subshell's stdin messages carry its id.
        request.header.subshell_id = self
            .inner
            .parent
            .get("subshell_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let (reply_tx, reply_rx) = std::sync::mpsc::channel();
        if !route.calls.send(InputCall {
            request,
            reply: reply_tx,
        }) {
            return Err(InputError::Disconnected);
        }
        loop {
            match reply_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(value) => return Ok(value),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if self.is_cancelled() {
                        return Err(InputError::Interrupted);
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(InputError::Disconnected);
                }
            }
        }
    }
}

fn transient(display_id: Option<&str>) -> Map<String, Value> {
    let mut transient = Map::new();
    if let Some(id) = display_id {
        transient.insert("display_id".to_owned(), Value::String(id.to_owned()));
    }
    transient
}
