//! The control channel: kernel_info, interrupt, shutdown, usage and the
//! subshell requests (create, delete, list), served on their own task so they
//! never wait behind a running cell.

use crate::kernel::info;
use crate::kernel::interpreter::Interpreter;
use crate::kernel::iopub::Publisher;
use crate::kernel::requests::{Replies, error_reply, malformed_reply, send_routed};
use crate::kernel::running_cells::RunningCells;
use crate::kernel::subshells::Subshells;
use crate::kernel::usage::UsageProbe;
use crate::protocol::content::{
    self, CreateSubshellReply, DeleteSubshellRequest, ErrorInfo, InterruptReply, ListSubshellReply,
    ShutdownReply, ShutdownRequest,
};
use crate::protocol::{Codec, Message};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

pub struct ControlSession {
    pub interpreter: Arc<dyn Interpreter>,
    pub publisher: Publisher,
    pub replies: Replies,
    pub codec: Codec,
    pub running: RunningCells,
    pub subshells: Subshells,
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
                    interrupt(&self.interpreter, &self.running, &self.publisher).await;
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
                "create_subshell_request" => {
                    let subshell_id = self.subshells.create();
                    let reply = CreateSubshellReply {
                        status: "ok",
                        subshell_id,
                    };
                    self.reply(&request, content::to_value(&reply)).await;
                }
                "delete_subshell_request" => {
                    let reply = match request.content_as::<DeleteSubshellRequest>() {
                        Ok(delete) => match self.subshells.delete(&delete.subshell_id) {
                            Ok(()) => serde_json::json!({"status": "ok"}),
                            Err(error) => error_reply(&error),
                        },
                        Err(error) => error_reply(&ErrorInfo {
                            ename: "BadRequest".into(),
                            evalue: format!("delete_subshell_request needs a subshell_id: {error}"),
                            traceback: vec![],
                        }),
                    };
                    self.reply(&request, reply).await;
                }
                "list_subshell_request" => {
                    let reply = ListSubshellReply {
                        status: "ok",
                        subshell_id: self.subshells.list(),
                    };
                    self.reply(&request, content::to_value(&reply)).await;
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

/// Marks the running cells cancelled (of every shell: an interrupt is
/// kernel-wide) and asks the interpreter to stop them. Used for
/// interrupt_request and for SIGINT alike. Producers of the cells' output
/// that wait for the client stop waiting (their output is dropped, with a
/// note), so the interrupt is not stuck behind a flood.
///
/// Invariant: the interpreter is asked to stop under the [`RunningCells`]
/// lock, so an interrupt never reaches a cell a client sends after it.
pub async fn interrupt(
    interpreter: &Arc<dyn Interpreter>,
    running: &RunningCells,
    publisher: &Publisher,
) {
    let interpreter = interpreter.clone();
    let running = running.clone();
    let publisher = publisher.clone();
    let _ = tokio::task::spawn_blocking(move || {
        running.interrupt_all(|| {
            log::info!("{INTERRUPT_MARKED}");
            publisher.interrupted();
            widen_interrupt_window();
            interpreter.interrupt();
        });
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
