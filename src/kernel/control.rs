//! The control channel: kernel_info, interrupt, shutdown and usage, served on
//! their own task so they never wait behind a running cell.

use crate::kernel::info;
use crate::kernel::interpreter::Interpreter;
use crate::kernel::iopub::Publisher;
use crate::kernel::requests::{Replies, malformed_reply, send_routed};
use crate::kernel::shell::CurrentCancel;
use crate::kernel::usage::UsageProbe;
use crate::protocol::content::{self, InterruptReply, ShutdownReply, ShutdownRequest};
use crate::protocol::{Codec, Message};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::{mpsc, oneshot};

pub struct ControlSession {
    pub interpreter: Arc<dyn Interpreter>,
    pub publisher: Publisher,
    pub replies: Replies,
    pub codec: Codec,
    pub current_cancel: CurrentCancel,
    pub shutdown: Option<oneshot::Sender<bool>>,
    pub usage: UsageProbe,
}

impl ControlSession {
    pub async fn run(mut self, mut queue: mpsc::UnboundedReceiver<Message>) {
        while let Some(request) = queue.recv().await {
            let parent = request.raw_header.clone();
            self.publisher.status("busy", &parent);
            if request.malformed.is_some() {
                if let Some(reply) = malformed_reply(&request) {
                    self.reply(&request, reply).await;
                }
                self.publisher.status("idle", &parent);
                continue;
            }
            match request.msg_type() {
                "kernel_info_request" => {
                    let reply = info::kernel_info(self.interpreter.as_ref());
                    self.reply(&request, reply).await;
                }
                "interrupt_request" => {
                    interrupt(&self.interpreter, &self.current_cancel, &self.publisher).await;
                    let reply = content::to_value(&InterruptReply { status: "ok" });
                    self.reply(&request, reply).await;
                }
                "shutdown_request" => {
                    let restart = request
                        .content_as::<ShutdownRequest>()
                        .map(|r| r.restart)
                        .unwrap_or(false);
                    let reply = content::to_value(&ShutdownReply {
                        status: "ok",
                        restart,
                    });
                    self.reply(&request, reply.clone()).await;
                    // ipykernel also broadcasts the reply so every client learns of it.
                    self.publisher.publish("shutdown_reply", reply, &parent);
                    self.publisher.status("idle", &parent);
                    self.publisher.flush().await;
                    if let Some(shutdown) = self.shutdown.take() {
                        let _ = shutdown.send(restart);
                    }
                    continue;
                }
                "usage_request" => {
                    let reply = {
                        let mut reply = self.usage.sample();
                        reply["status"] = "ok".into();
                        reply
                    };
                    self.reply(&request, reply).await;
                }
                other => log::info!("control: ignoring unsupported message type {other:?}"),
            }
            self.publisher.status("idle", &parent);
        }
    }

    async fn reply(&mut self, request: &Message, content: serde_json::Value) {
        let message = request.reply(self.publisher.session(), content);
        send_routed(&self.replies, &self.codec, message);
    }
}

/// What the kernel logs (at info level) once an interrupt has marked the
/// current cell; tests wait for it.
const INTERRUPT_MARKED: &str = "interrupt: the current cell is marked interrupted";

/// Marks the running cell cancelled and asks the interpreter to stop it. Used
/// for interrupt_request and for SIGINT alike. Producers of the cell's output
/// that wait for the client stop waiting (their output is dropped, with a
/// note), so the interrupt is not stuck behind a flood.
///
/// Invariant: the interpreter is asked to stop while `current_cancel` stays
/// locked. The shell takes that lock to start the next cell, so an interrupt
/// that arrives as one cell ends acts on that cell alone (or on nothing),
/// never on the cell the client sends next.
pub async fn interrupt(
    interpreter: &Arc<dyn Interpreter>,
    current_cancel: &CurrentCancel,
    publisher: &Publisher,
) {
    let interpreter = interpreter.clone();
    let current_cancel = current_cancel.clone();
    let publisher = publisher.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let current = current_cancel
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        current.store(true, Ordering::SeqCst);
        log::info!("{INTERRUPT_MARKED}");
        publisher.interrupted();
        widen_interrupt_window();
        interpreter.interrupt();
    })
    .await;
}

/// Test builds only (`test-hooks`): waits `FERROLAB_TEST_INTERRUPT_DELAY_MS`
/// between marking a cell interrupted and stopping it, so a test can send
/// the next cell inside that window every time.
#[cfg(feature = "test-hooks")]
fn widen_interrupt_window() {
    if let Some(delay) = std::env::var("FERROLAB_TEST_INTERRUPT_DELAY_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(delay));
    }
}

/// Does nothing: user builds have no test hooks.
#[cfg(not(feature = "test-hooks"))]
fn widen_interrupt_window() {}
