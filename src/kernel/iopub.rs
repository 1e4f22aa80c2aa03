//! The IOPub publisher: one task owns the PUB socket and sends everything in the
//! order it was queued.
//!
//! Stream text is coalesced by [`StreamBatcher`]; any other message first sends
//! the held stream text, so outputs never overtake each other. `flush` returns
//! once everything queued before it has been handed to the socket, which is how
//! the session makes `idle` follow a cell's last output.

use crate::kernel::stream_batch::{StreamBatcher, StreamChunk};
use crate::protocol::content::{self, Status};
use crate::protocol::{Codec, Message};
use bytes::Bytes;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use zeromq::{PubSocket, SocketSend, ZmqMessage};

/// How long stream text may be held to batch it with what follows.
pub const STREAM_WINDOW: Duration = Duration::from_millis(50);
const STREAM_MAX_BYTES: usize = 256 * 1024;

enum Command {
    Message(Box<Message>),
    Stream {
        parent: Value,
        name: &'static str,
        text: String,
    },
    Flush(oneshot::Sender<()>),
}

/// A cheap handle for queueing IOPub messages from any thread.
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::UnboundedSender<Command>,
    session: Arc<str>,
}

impl Publisher {
    /// Starts the publisher task on the current runtime.
    pub fn spawn(socket: PubSocket, codec: Codec, session: Arc<str>) -> Publisher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(socket, codec, session.clone(), rx));
        Publisher { tx, session }
    }

    pub fn session(&self) -> &str {
        &self.session
    }

    /// Queues a message of `msg_type` with `parent` as its parent header.
    pub fn publish(&self, msg_type: &str, content: Value, parent: &Value) {
        let message = Message::new(msg_type, &self.session, content, parent.clone());
        let _ = self.tx.send(Command::Message(Box::new(message)));
    }

    pub fn status(&self, execution_state: &'static str, parent: &Value) {
        self.publish(
            "status",
            content::to_value(&Status { execution_state }),
            parent,
        );
    }

    /// Queues stream text (batched).
    pub fn stream(&self, parent: &Value, name: &'static str, text: &str) {
        if text.is_empty() {
            return;
        }
        let _ = self.tx.send(Command::Stream {
            parent: parent.clone(),
            name,
            text: text.to_owned(),
        });
    }

    /// Waits until everything queued so far was handed to the socket. For
    /// blocking threads only.
    pub fn flush_blocking(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Command::Flush(ack)).is_ok() {
            let _ = done.blocking_recv();
        }
    }

    /// Async twin of [`flush_blocking`](Self::flush_blocking).
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Command::Flush(ack)).is_ok() {
            let _ = done.await;
        }
    }
}

async fn run(
    mut socket: PubSocket,
    codec: Codec,
    session: Arc<str>,
    mut rx: mpsc::UnboundedReceiver<Command>,
) {
    let mut batcher = StreamBatcher::new(STREAM_WINDOW, STREAM_MAX_BYTES);
    loop {
        let command = match batcher.deadline() {
            Some(deadline) => {
                tokio::select! {
                    command = rx.recv() => command,
                    _ = tokio::time::sleep_until(deadline.into()) => {
                        if let Some(chunk) = batcher.poll(Instant::now()) {
                            send_stream(&mut socket, &codec, &session, chunk).await;
                        }
                        continue;
                    }
                }
            }
            None => rx.recv().await,
        };
        let Some(command) = command else { break };
        match command {
            Command::Stream { parent, name, text } => {
                for chunk in batcher.push(Instant::now(), &parent, name, &text) {
                    send_stream(&mut socket, &codec, &session, chunk).await;
                }
            }
            Command::Message(message) => {
                if let Some(chunk) = batcher.flush(Instant::now()) {
                    send_stream(&mut socket, &codec, &session, chunk).await;
                }
                send(&mut socket, &codec, *message).await;
            }
            Command::Flush(ack) => {
                if let Some(chunk) = batcher.flush(Instant::now()) {
                    send_stream(&mut socket, &codec, &session, chunk).await;
                }
                let _ = ack.send(());
            }
        }
    }
}

async fn send_stream(socket: &mut PubSocket, codec: &Codec, session: &str, chunk: StreamChunk) {
    let content = json!({"name": chunk.name, "text": chunk.text});
    send(
        socket,
        codec,
        Message::new("stream", session, content, chunk.parent),
    )
    .await;
}

async fn send(socket: &mut PubSocket, codec: &Codec, mut message: Message) {
    let topic = format!(
        "kernel.{}.{}",
        message.header.session, message.header.msg_type
    );
    message.identities = vec![Bytes::from(topic)];
    let frames = codec.encode(&message);
    match ZmqMessage::try_from(frames) {
        Ok(zmq_message) => {
            if let Err(error) = socket.send(zmq_message).await {
                log::warn!("iopub: could not send {}: {error}", message.header.msg_type);
            }
        }
        Err(error) => log::warn!("iopub: empty message: {error:?}"),
    }
}
