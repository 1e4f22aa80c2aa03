//! What a running cell may do to the outside world, handed to the interpreter.
//!
//! Output goes through the IOPub [`Publisher`] with the execute request as
//! parent; input goes through the stdin channel when the frontend allowed it.
//! Cloneable and `Send`, so helper threads (an output relay, a shell command's
//! reader) can publish for the cell that started them.

use crate::kernel::history::History;
use crate::kernel::iopub::Publisher;
use crate::kernel::stdin::InputCall;
use crate::protocol::Message;
use crate::protocol::content::{
    self, ClearOutput, DisplayData, HistoryRequest, InputRequest, MimeBundle,
};
use bytes::Bytes;
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

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
    pub calls: mpsc::UnboundedSender<InputCall>,
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
        self.inner
            .publisher
            .stream(&self.inner.parent, name.as_str(), text);
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
        self.inner.publisher.publish(
            "display_data",
            content::to_value(&content),
            &self.inner.parent,
        );
    }

    /// Replaces an earlier display with the same id.
    pub fn update_display(&self, data: MimeBundle, metadata: Map<String, Value>, display_id: &str) {
        let content = DisplayData {
            data,
            metadata,
            transient: transient(Some(display_id)),
        };
        self.inner.publisher.publish(
            "update_display_data",
            content::to_value(&content),
            &self.inner.parent,
        );
    }

    pub fn clear_output(&self, wait: bool) {
        self.inner.publisher.publish(
            "clear_output",
            content::to_value(&ClearOutput { wait }),
            &self.inner.parent,
        );
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
        let (reply_tx, reply_rx) = std::sync::mpsc::channel();
        route
            .calls
            .send(InputCall {
                request,
                reply: reply_tx,
            })
            .map_err(|_| InputError::Disconnected)?;
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
