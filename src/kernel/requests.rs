//! A request channel (shell or control): its socket thread verifies each
//! message, queues it for the channel's session in arrival order, and sends
//! the session's replies. Refused messages are logged with the reason (never
//! the key), rate-limited, and dropped.

use crate::kernel::drop_log::DropLog;
use crate::kernel::transport::{Endpoint, Mailbox, SocketThreads, send_frames};
use crate::protocol::content::{self, ErrorInfo};
use crate::protocol::{Codec, Message};
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

/// Where a session's replies go: encoded frames, routing identities first.
pub type Replies = Mailbox<Vec<Bytes>>;

/// Starts the socket thread of one request channel; returns the queue of
/// verified requests and where to send replies.
pub fn spawn(
    threads: &mut SocketThreads,
    channel: &'static str,
    socket: zmq::Socket,
    limit: usize,
    codec: Codec,
) -> std::io::Result<(mpsc::UnboundedReceiver<Message>, Replies)> {
    let (queue, requests) = mpsc::unbounded_channel();
    let reader = Reader {
        channel,
        codec,
        queue,
        drops: DropLog::new(channel),
    };
    let replies = threads.spawn(channel, socket, limit, reader)?;
    Ok((requests, replies))
}

struct Reader {
    channel: &'static str,
    codec: Codec,
    queue: mpsc::UnboundedSender<Message>,
    drops: DropLog,
}

impl Endpoint for Reader {
    type Command = Vec<Bytes>;

    fn received(&mut self, _socket: &mut zmq::Socket, frames: Vec<Bytes>) {
        match self.codec.decode(frames) {
            Ok(message) => {
                let _ = self.queue.send(message);
            }
            Err(error) => self.drops.warn(&error),
        }
    }

    fn command(&mut self, socket: &mut zmq::Socket, frames: Vec<Bytes>) {
        // A ROUTER never blocks: a reply to a peer that is gone or not
        // reading is dropped by libzmq.
        if let Err(error) = send_frames(socket, frames, zmq::DONTWAIT) {
            log::warn!("{}: could not send a reply: {error}", self.channel);
        }
    }
}

/// Encodes and queues a reply, logging (not propagating) failures: a client
/// that went away must not stop the kernel.
pub fn send_routed(replies: &Replies, codec: &Codec, message: Message) {
    if !replies.send(codec.encode(&message)) {
        log::warn!(
            "could not send {}: the socket thread has ended",
            message.header.msg_type
        );
    }
}

/// The content of an error reply: the error's fields and `status: error`.
pub fn error_reply(error: &ErrorInfo) -> Value {
    let mut reply = content::to_value(error);
    reply["status"] = "error".into();
    reply
}

/// For a request whose body could not be read ([`Message::malformed`]): the
/// `BadRequest` error content to reply with. `None` when the body was fine,
/// and for messages that are not requests (they get no reply); logs either way.
pub fn malformed_reply(request: &Message) -> Option<Value> {
    let reason = request.malformed.as_deref()?;
    log::info!(
        "a {} whose body could not be read: {reason}",
        request.msg_type()
    );
    request.msg_type().ends_with("_request").then(|| {
        error_reply(&ErrorInfo {
            ename: "BadRequest".into(),
            evalue: format!("{} could not be read: {reason}", request.msg_type()),
            traceback: vec![],
        })
    })
}
