//! The stdin channel: sends `input_request`s and routes `input_reply`s back to
//! the cell that asked, matched by parent `msg_id`. Replies nobody waits for
//! (stale, or for an interrupted cell) are dropped with a log line. Runs on the
//! stdin socket's own thread.

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

struct Stdin {
    codec: Codec,
    waiting: HashMap<String, std::sync::mpsc::Sender<String>>,
    drops: DropLog,
}

impl Endpoint for Stdin {
    type Command = InputCall;

    fn command(&mut self, socket: &mut zmq::Socket, call: InputCall) {
        // One cell asks at a time; anything still waiting belongs to a cell that gave up.
        self.waiting.clear();
        let frames = self.codec.encode(&call.request);
        match send_frames(socket, frames, zmq::DONTWAIT) {
            Ok(()) => {
                self.waiting
                    .insert(call.request.header.msg_id.clone(), call.reply);
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
        // jupyter_client sends input_reply without a parent header; with
        // one cell asking at a time, a reply without a known parent
        // belongs to the only question outstanding.
        let by_parent = message
            .parent_msg_id()
            .and_then(|id| self.waiting.remove(id));
        let waiter = by_parent.or_else(|| {
            if self.waiting.len() == 1 {
                self.waiting.drain().next().map(|(_, sender)| sender)
            } else {
                None
            }
        });
        match waiter {
            Some(sender) => {
                let _ = sender.send(value);
            }
            None => log::info!("stdin: input_reply for a request nobody waits for; dropped"),
        }
    }
}
