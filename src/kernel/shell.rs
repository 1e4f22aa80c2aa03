//! A shell session: one request at a time, in arrival order. The main shell
//! and every subshell (see `subshells`) is one of these, with its own
//! execution counter and history; they run concurrently.
//!
//! Owns the execution counter and the history. Around every request it
//! publishes `busy` then `idle`; for execute it registers the cell with the
//! running cells (so an interrupt sent by a client that has seen the cell's
//! input reaches it), publishes `execute_input`, lets the interpreter run the
//! cell on a blocking thread, publishes the result or
//! the single `error` output, replies, and only then goes idle. After a failed
//! cell with `stop_on_error`, the execute requests that had arrived before its
//! reply went out are answered `aborted` without running (the queue is read
//! before the reply is sent, so a request a client sends after seeing the
//! reply always runs); other requests keep their place. A
//! request whose body could not be parsed is answered with a `BadRequest`
//! error (busy, reply, idle) like any other bad request.
//! `kernel_info_request` never reaches a session: `subshells` answers it at
//! once, whichever shell it names.

use crate::kernel::CellContext;
use crate::kernel::cell_context::SharedHistory;
use crate::kernel::cell_context::StdinRoute;
use crate::kernel::interpreter::{Completeness, ExecuteOutcome, Interpreter};
use crate::kernel::iopub::Publisher;
use crate::kernel::requests::{Replies, error_reply, malformed_reply, send_routed};
use crate::kernel::running_cells::{RunningCells, ShellKey};
use crate::kernel::stdin::InputCall;
use crate::kernel::transport::Mailbox;
use crate::protocol::content::{
    self, CommClose, CommInfoReply, CommOpen, CompleteReply, CompleteRequest, ErrorInfo,
    ExecuteInput, ExecuteReplyAborted, ExecuteReplyError, ExecuteReplyOk, ExecuteRequest,
    ExecuteResult, HistoryReply, HistoryRequest, InspectReply, InspectRequest, IsCompleteReply,
    IsCompleteRequest,
};
use crate::protocol::{Codec, Message};
use serde_json::{Map, Value, json};
use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// The requests that arrived while a request ran: the channel's queue and
/// the non-execute requests held back to keep their place.
struct Arrived<'a> {
    queue: &'a mut mpsc::UnboundedReceiver<Message>,
    held: &'a mut VecDeque<Message>,
}

impl Arrived<'_> {
    /// Takes every execute request that has arrived so far; others stay held, in order.
    fn executes(&mut self) -> Vec<Message> {
        let mut executes = Vec::new();
        while let Ok(queued) = self.queue.try_recv() {
            if queued.msg_type() == "execute_request" {
                executes.push(queued);
            } else {
                self.held.push_back(queued);
            }
        }
        executes
    }
}

/// What every shell session of a kernel shares.
#[derive(Clone)]
pub struct ShellParts {
    pub interpreter: Arc<dyn Interpreter>,
    pub publisher: Publisher,
    pub replies: Replies,
    pub codec: Codec,
    pub stdin: Mailbox<InputCall>,
    pub running: RunningCells,
}

pub struct ShellSession {
    parts: ShellParts,
    /// `None` for the main shell, the subshell's id otherwise.
    key: ShellKey,
    history: SharedHistory,
    execution_count: u64,
}

impl ShellSession {
    pub fn new(parts: ShellParts, key: ShellKey, history: SharedHistory) -> Self {
        ShellSession {
            parts,
            key,
            history,
            execution_count: 0,
        }
    }

    /// Serves requests until the queue closes.
    pub async fn run(mut self, mut queue: mpsc::UnboundedReceiver<Message>) {
        let mut held: VecDeque<Message> = VecDeque::new();
        loop {
            let message = match held.pop_front() {
                Some(message) => message,
                None => match queue.recv().await {
                    Some(message) => message,
                    None => break,
                },
            };
            let mut arrived = Arrived {
                queue: &mut queue,
                held: &mut held,
            };
            for aborted in self.handle(message, &mut arrived).await {
                self.abort(&aborted).await;
            }
        }
        if self.key.is_some() {
            self.parts.running.forget(&self.key);
        }
    }

    /// Handles one request; returns the queued executes that must be aborted.
    async fn handle(&mut self, request: Message, arrived: &mut Arrived<'_>) -> Vec<Message> {
        let parent = request.raw_header.clone();
        self.parts.publisher.status("busy", &parent);
        let mut abort_queued = Vec::new();
        if request.malformed.is_some() {
            if let Some(mut reply) = malformed_reply(&request) {
                if request.msg_type() == "execute_request" {
                    reply["execution_count"] = json!(self.execution_count);
                }
                self.reply(&request, reply).await;
            }
            self.parts.publisher.status("idle", &parent);
            return abort_queued;
        }
        match request.msg_type() {
            "execute_request" => abort_queued = self.execute(&request, arrived).await,
            "complete_request" => self.complete(&request).await,
            "inspect_request" => self.inspect(&request).await,
            "is_complete_request" => self.is_complete(&request).await,
            "history_request" => self.history(&request).await,
            "comm_info_request" => {
                let reply = CommInfoReply {
                    status: "ok",
                    comms: Map::new(),
                };
                self.reply(&request, content::to_value(&reply)).await;
            }
            "comm_open" => self.refuse_comm(&request),
            "comm_msg" | "comm_close" => {
                log::debug!(
                    "shell: {} for a comm this kernel never opened",
                    request.msg_type()
                )
            }
            other => log::info!("shell: ignoring unsupported message type {other:?}"),
        }
        self.parts.publisher.status("idle", &parent);
        abort_queued
    }

    async fn execute(&mut self, request: &Message, arrived: &mut Arrived<'_>) -> Vec<Message> {
        let execute: ExecuteRequest = match request.content_as() {
            Ok(execute) => execute,
            Err(error) => {
                let info = ErrorInfo {
                    ename: "BadRequest".into(),
                    evalue: format!("execute_request content is not valid: {error}"),
                    traceback: vec![],
                };
                self.reply_error(request, info).await;
                return Vec::new();
            }
        };
        let has_code = !execute.code.trim().is_empty();
        let stores = execute.stores_history() && has_code;
        if stores {
            self.execution_count += 1;
        }
        let count = self.execution_count;
        // Registered before `execute_input` goes out, so a client that has
        // seen this cell's input knows an interrupt sent now will reach it.
        let cancelled = has_code.then(|| self.parts.running.begin(&self.key));
        if !execute.silent {
            let input = ExecuteInput {
                code: execute.code.clone(),
                execution_count: count,
            };
            self.parts.publisher.publish(
                "execute_input",
                content::to_value(&input),
                &request.raw_header,
            );
        }
        let outcome = match cancelled {
            Some(cancelled) => self.run_cell(request, &execute, count, cancelled).await,
            None => ExecuteOutcome::ok(),
        };
        self.parts.publisher.flush().await;
        match outcome {
            ExecuteOutcome::Ok { result, payload } => {
                let output_text = result
                    .as_ref()
                    .and_then(|data| data.get("text/plain"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                if let Some(data) = result
                    && !execute.silent
                {
                    let result = ExecuteResult {
                        execution_count: count,
                        data,
                        metadata: Map::new(),
                    };
                    self.parts.publisher.publish(
                        "execute_result",
                        content::to_value(&result),
                        &request.raw_header,
                    );
                    self.parts.publisher.flush().await;
                }
                let reply = ExecuteReplyOk {
                    status: "ok",
                    execution_count: count,
                    payload,
                    user_expressions: unsupported_user_expressions(&execute.user_expressions),
                };
                self.reply(request, content::to_value(&reply)).await;
                if stores {
                    let input = self.parts.interpreter.history_text(&execute.code);
                    lock(&self.history).store(count, &input, output_text.as_deref());
                }
                Vec::new()
            }
            ExecuteOutcome::Error(info) => {
                self.parts.publisher.publish(
                    "error",
                    content::to_value(&info),
                    &request.raw_header,
                );
                self.parts.publisher.flush().await;
                let aborted = if execute.stop_on_error && !execute.silent {
                    arrived.executes()
                } else {
                    Vec::new()
                };
                let reply = ExecuteReplyError {
                    status: "error",
                    execution_count: count,
                    error: info,
                    payload: Vec::new(),
                    user_expressions: Map::new(),
                };
                self.reply(request, content::to_value(&reply)).await;
                if stores {
                    let input = self.parts.interpreter.history_text(&execute.code);
                    lock(&self.history).store(count, &input, None);
                }
                aborted
            }
        }
    }

    async fn run_cell(
        &mut self,
        request: &Message,
        execute: &ExecuteRequest,
        count: u64,
        cancelled: Arc<AtomicBool>,
    ) -> ExecuteOutcome {
        let stdin = execute.allow_stdin.then(|| StdinRoute {
            calls: self.parts.stdin.clone(),
            identities: request.identities.clone(),
        });
        let cell = CellContext::new(
            self.parts.publisher.clone(),
            self.history.clone(),
            request.raw_header.clone(),
            stdin,
            cancelled,
            count,
            execute.silent,
        );
        let interpreter = self.parts.interpreter.clone();
        let code = execute.code.clone();
        let running = cell.clone();
        let outcome = tokio::task::spawn_blocking(move || interpreter.execute(&code, &running))
            .await
            .unwrap_or_else(|error| {
                log::error!("shell: the interpreter panicked: {error}");
                ExecuteOutcome::error(
                    "InternalError",
                    "ferrolab hit an internal error while running this cell; the kernel is still running",
                    vec![format!("InternalError: {error}")],
                )
            });
        let dropped = cell.dropped_output();
        if dropped > 0 {
            let note = format!(
                "[ferrolab: the cell was interrupted while its output waited for the client; {dropped} bytes of output were dropped]\n"
            );
            self.parts.publisher.publish(
                "stream",
                json!({"name": "stderr", "text": note}),
                &request.raw_header,
            );
        }
        outcome
    }

    async fn abort(&mut self, request: &Message) {
        let parent = request.raw_header.clone();
        self.parts.publisher.status("busy", &parent);
        let reply = ExecuteReplyAborted {
            status: "aborted",
            execution_count: self.execution_count,
        };
        let mut message = request.reply(self.parts.publisher.session(), content::to_value(&reply));
        message.metadata = json!({"status": "aborted"});
        self.send(message).await;
        self.parts.publisher.status("idle", &parent);
    }

    async fn complete(&mut self, request: &Message) {
        let Ok(complete) = request.content_as::<CompleteRequest>() else {
            return self.reply_bad_request(request).await;
        };
        let cursor = complete
            .cursor_pos
            .unwrap_or_else(|| complete.code.chars().count());
        let interpreter = self.parts.interpreter.clone();
        let code = complete.code;
        let completions = tokio::task::spawn_blocking(move || interpreter.complete(&code, cursor))
            .await
            .unwrap_or_default();
        let mut metadata = Map::new();
        if !completions.types.is_empty() {
            metadata.insert(
                "_jupyter_types_experimental".into(),
                Value::Array(completions.types),
            );
        }
        let reply = CompleteReply {
            status: "ok",
            matches: completions.matches,
            cursor_start: completions.cursor_start,
            cursor_end: completions.cursor_end.max(completions.cursor_start),
            metadata,
        };
        self.reply(request, content::to_value(&reply)).await;
    }

    async fn inspect(&mut self, request: &Message) {
        let Ok(inspect) = request.content_as::<InspectRequest>() else {
            return self.reply_bad_request(request).await;
        };
        let cursor = inspect
            .cursor_pos
            .unwrap_or_else(|| inspect.code.chars().count());
        let interpreter = self.parts.interpreter.clone();
        let data = tokio::task::spawn_blocking(move || {
            interpreter.inspect(&inspect.code, cursor, inspect.detail_level)
        })
        .await
        .ok()
        .flatten();
        let reply = InspectReply {
            status: "ok",
            found: data.is_some(),
            data: data.unwrap_or_default(),
            metadata: Map::new(),
        };
        self.reply(request, content::to_value(&reply)).await;
    }

    async fn is_complete(&mut self, request: &Message) {
        let Ok(is_complete) = request.content_as::<IsCompleteRequest>() else {
            return self.reply_bad_request(request).await;
        };
        let reply = match self.parts.interpreter.is_complete(&is_complete.code) {
            Completeness::Complete => IsCompleteReply {
                status: "complete",
                indent: None,
            },
            Completeness::Incomplete { indent } => IsCompleteReply {
                status: "incomplete",
                indent: Some(indent),
            },
            Completeness::Invalid => IsCompleteReply {
                status: "invalid",
                indent: None,
            },
            Completeness::Unknown => IsCompleteReply {
                status: "unknown",
                indent: None,
            },
        };
        self.reply(request, content::to_value(&reply)).await;
    }

    async fn history(&mut self, request: &Message) {
        let Ok(query) = request.content_as::<HistoryRequest>() else {
            return self.reply_bad_request(request).await;
        };
        let reply = HistoryReply {
            status: "ok",
            history: lock(&self.history).query(&query),
        };
        self.reply(request, content::to_value(&reply)).await;
    }

    /// No comm targets are registered: every comm_open is closed at once.
    fn refuse_comm(&mut self, request: &Message) {
        match request.content_as::<CommOpen>() {
            Ok(open) => {
                log::info!(
                    "shell: closing comm for unknown target {:?}",
                    open.target_name
                );
                let close = CommClose {
                    comm_id: open.comm_id,
                    data: Map::new(),
                };
                self.parts.publisher.publish(
                    "comm_close",
                    content::to_value(&close),
                    &request.raw_header,
                );
            }
            Err(error) => log::info!("shell: comm_open without comm_id: {error}"),
        }
    }

    async fn reply_bad_request(&mut self, request: &Message) {
        let info = ErrorInfo {
            ename: "BadRequest".into(),
            evalue: format!("{} content is missing required fields", request.msg_type()),
            traceback: vec![],
        };
        self.reply_error(request, info).await;
    }

    async fn reply_error(&mut self, request: &Message, info: ErrorInfo) {
        let mut reply = error_reply(&info);
        if request.msg_type() == "execute_request" {
            reply["execution_count"] = json!(self.execution_count);
        }
        self.reply(request, reply).await;
    }

    async fn reply(&mut self, request: &Message, content: Value) {
        let message = request.reply(self.parts.publisher.session(), content);
        self.send(message).await;
    }

    async fn send(&mut self, message: Message) {
        send_routed(&self.parts.replies, &self.parts.codec, message);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Rust expressions need a compile each; user_expressions are answered with a
/// per-key error rather than silently dropped.
fn unsupported_user_expressions(expressions: &Map<String, Value>) -> Map<String, Value> {
    expressions
        .keys()
        .map(|key| {
            (
                key.clone(),
                json!({
                    "status": "error",
                    "ename": "NotSupported",
                    "evalue": "ferrolab does not evaluate user_expressions",
                    "traceback": [],
                }),
            )
        })
        .collect()
}
