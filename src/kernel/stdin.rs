//! The stdin channel: sends `input_request`s and routes `input_reply`s back to
//! the cell that asked, matched by parent `msg_id`. Each shell (main or
//! subshell) has at most one question outstanding: a new one from the same
//! shell replaces a cell's that gave up. Replies nobody waits for (stale, or
//! for an interrupted cell) are dropped with a log line. Runs on the stdin
//! socket's own thread.

use crate::kernel::drop_log::DropLog;
use crate::kernel::transport::{Endpoint, Mailbox, SocketThreads, send_frames};
use crate::protocol::{Codec, Message};
use bytes::Bytes;
use std::collections::HashMap;

/// One pending question for the frontend.
pub struct InputCall {
    pub request: Message,
    pub reply: std::sync::mpsc::Sender<String>,
}

/// Starts the stdin thread; returns where to send input calls.
pub fn spawn(
    threads: &mut SocketThreads,
    socket: zmq::Socket,
    limit: usize,
    codec: Codec,
) -> std::io::Result<Mailbox<InputCall>> {
    let stdin = Stdin {
        codec,
        waiting: HashMap::new(),
        drops: DropLog::new("stdin"),
    };
    threads.spawn("stdin", socket, limit, stdin)
}

/// A question outstanding: which shell asked, and where its answer goes.
struct Waiter {
    shell: Option<String>,
    reply: std::sync::mpsc::Sender<String>,
}

struct Stdin {
    codec: Codec,
    /// By the `msg_id` of the `input_request`.
    waiting: HashMap<String, Waiter>,
    drops: DropLog,
}

impl Stdin {
    /// The one question outstanding from the reply's shell, or else the one
    /// question outstanding at all; `None` when that is ambiguous.
    fn only_question_of(&mut self, shell: Option<&str>) -> Option<Waiter> {
        let of_shell: Vec<&String> = self
            .waiting
            .iter()
            .filter(|(_, waiter)| waiter.shell.as_deref() == shell)
            .map(|(id, _)| id)
            .collect();
        let id = match (of_shell.as_slice(), self.waiting.len()) {
            ([one], _) => (*one).clone(),
            (_, 1) => self.waiting.keys().next()?.clone(),
            _ => return None,
        };
        self.waiting.remove(&id)
    }
}

impl Endpoint for Stdin {
    type Command = InputCall;

    fn command(&mut self, socket: &mut zmq::Socket, call: InputCall) {
        // One cell per shell asks at a time; anything still waiting from the
        // same shell belongs to a cell that gave up.
        let shell = call.request.header.subshell_id.clone();
        self.waiting.retain(|_, waiter| waiter.shell != shell);
        let frames = self.codec.encode(&call.request);
        match send_frames(socket, frames, zmq::DONTWAIT) {
            Ok(()) => {
                let waiter = Waiter {
                    shell,
                    reply: call.reply,
                };
                self.waiting
                    .insert(call.request.header.msg_id.clone(), waiter);
            }
            Err(error) => log::warn!("stdin: could not send input_request: {error}"),
        }
    }

    fn received(&mut self, _socket: &mut zmq::Socket, frames: Vec<Bytes>) {
        let message = match self.codec.decode(frames) {
            Ok(message) => message,
            Err(error) => {
                self.drops.warn(&error);
                return;
            }
        };
        if let Some(reason) = &message.malformed {
            log::info!(
                "stdin: dropped a {} whose body is not valid: {reason}",
                message.msg_type()
            );
            return;
        }
        if message.msg_type() != "input_reply" {
            log::debug!("stdin: ignoring {}", message.msg_type());
            return;
        }
        let value = message
            .content
            .get("value")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        // jupyter_client sends input_reply without a parent header: such a
        // reply belongs to the only question outstanding, if there is one.
        let by_parent = message
            .parent_msg_id()
            .and_then(|id| self.waiting.remove(id));
        let waiter = by_parent.or_else(|| self.only_question_of(message.subshell_id()));
        match waiter {
            Some(waiter) => {
                let _ = waiter.reply.send(value);
            }
            None => log::info!("stdin: input_reply for a request nobody waits for; dropped"),
        }
    }
}
