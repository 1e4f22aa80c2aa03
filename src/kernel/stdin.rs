//! The stdin channel: sends `input_request`s and routes `input_reply`s back to
//! the cell that asked, matched by parent `msg_id`. Replies nobody waits for
//! (stale, or for an interrupted cell) are dropped with a log line.

use crate::protocol::{Codec, Message};
use std::collections::HashMap;
use tokio::sync::mpsc;
use zeromq::{RouterSocket, SocketRecv, SocketSend, ZmqMessage};

/// One pending question for the frontend.
pub struct InputCall {
    pub request: Message,
    pub reply: std::sync::mpsc::Sender<String>,
}

/// Starts the stdin task; returns where to send input calls.
pub fn spawn(socket: RouterSocket, codec: Codec) -> mpsc::UnboundedSender<InputCall> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(socket, codec, rx));
    tx
}

async fn run(socket: RouterSocket, codec: Codec, mut calls: mpsc::UnboundedReceiver<InputCall>) {
    let (mut send, mut recv) = socket.split();
    let mut waiting: HashMap<String, std::sync::mpsc::Sender<String>> = HashMap::new();
    let mut drops = super::drop_log::DropLog::new("stdin");
    loop {
        tokio::select! {
            call = calls.recv() => {
                let Some(call) = call else { break };
                // One cell asks at a time; anything still waiting belongs to a cell that gave up.
                waiting.clear();
                let frames = codec.encode(&call.request);
                match ZmqMessage::try_from(frames) {
                    Ok(message) => match send.send(message).await {
                        Ok(()) => {
                            waiting.insert(call.request.header.msg_id.clone(), call.reply);
                        }
                        Err(error) => log::warn!("stdin: could not send input_request: {error}"),
                    },
                    Err(error) => log::warn!("stdin: empty message: {error:?}"),
                }
            }
            received = recv.recv() => {
                let frames = match received {
                    Ok(message) => message.into_vec(),
                    Err(error) => {
                        log::warn!("stdin: receive failed: {error}");
                        continue;
                    }
                };
                let message = match codec.decode(frames) {
                    Ok(message) => message,
                    Err(error) => {
                        drops.warn(&error);
                        continue;
                    }
                };
                if message.msg_type() != "input_reply" {
                    log::debug!("stdin: ignoring {}", message.msg_type());
                    continue;
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
                let by_parent = message.parent_msg_id().and_then(|id| waiting.remove(id));
                let waiter = by_parent.or_else(|| {
                    if waiting.len() == 1 {
                        waiting.drain().next().map(|(_, sender)| sender)
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
    }
}
