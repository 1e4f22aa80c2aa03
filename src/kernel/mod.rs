//! Sockets and the session: everything between the wire and the interpreter.
//!
//! One task per channel: a reader per ROUTER socket feeding the shell and
//! control sessions, the IOPub publisher, the stdin router and the heartbeat.
//! `starting` is published once; `kernel_info` is answered immediately while the
//! interpreter warms up in the background. SIGINT means "interrupt" and never
//! ends the process; a `shutdown_request` replies, stops the interpreter's
//! children and exits; SIGTERM does the same without a reply.
//!
//! This layer knows nothing about Rust or magics: it talks to an
//! [`Interpreter`] and hands each cell a [`CellContext`].

mod cell_context;
mod control;
mod drop_log;
mod heartbeat;
pub mod history;
mod info;
pub mod interpreter;
mod iopub;
mod shell;
mod sockets;
mod stdin;
pub mod stream_batch;
mod usage;

pub use cell_context::{CellContext, InputError, StreamName};
pub use interpreter::{Completeness, Completions, ExecuteOutcome, Interpreter, KernelIdentity};

use crate::protocol::{Codec, ConnectionInfo, Message};
use history::History;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use zeromq::{RouterRecvHalf, SocketRecv};

/// Serves the kernel described by `connection_file` until a shutdown request.
pub fn serve(connection_file: &Path, interpreter: Arc<dyn Interpreter>) -> anyhow::Result<()> {
    let info = ConnectionInfo::from_file(connection_file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ferrolab-io")
        .enable_all()
        .build()?;
    let restart = runtime.block_on(async {
        tokio::select! {
            served = serve_async(info, interpreter.clone()) => served,
            () = terminated() => Ok(false),
        }
    })?;
    log::info!("shutting down (restart requested: {restart})");
    let (stopped_tx, stopped_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        interpreter.shutdown();
        let _ = stopped_tx.send(());
    });
    // Children get a bounded time to go; the process exits either way.
    let _ = stopped_rx.recv_timeout(Duration::from_secs(3));
    runtime.shutdown_timeout(Duration::from_millis(200));
    Ok(())
}

/// Resolves on SIGTERM: the kernel then shuts down as for a shutdown_request
/// (children and process groups ended), without a reply to send.
async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut sigterm) => {
            sigterm.recv().await;
            log::info!("SIGTERM: shutting down");
        }
        Err(_) => std::future::pending().await,
    }
}

async fn serve_async(
    info: ConnectionInfo,
    interpreter: Arc<dyn Interpreter>,
) -> anyhow::Result<bool> {
    let codec = Codec::new(&info.key);
    let session: Arc<str> = uuid::Uuid::new_v4().to_string().into();
    let sockets = sockets::bind_all(&info).await?;
    log::info!(
        "listening on {} (transport {:?})",
        info.endpoint(info.shell_port),
        info.transport
    );

    let publisher = iopub::Publisher::spawn(sockets.iopub, codec.clone(), session.clone());
    publisher.status("starting", &serde_json::json!({}));
    heartbeat::spawn(sockets.heartbeat);
    let stdin_calls = stdin::spawn(sockets.stdin, codec.clone());
    interpreter.start();

    let current_cancel = Arc::new(Mutex::new(Arc::new(AtomicBool::new(false))));
    let (shutdown_tx, shutdown_rx) = oneshot::channel();

    let (shell_replies, shell_requests) = sockets.shell.split();
    let shell_queue = spawn_reader("shell", shell_requests, codec.clone());
    let shell = shell::ShellSession {
        interpreter: interpreter.clone(),
        publisher: publisher.clone(),
        replies: shell_replies,
        codec: codec.clone(),
        stdin: stdin_calls,
        current_cancel: current_cancel.clone(),
        history: Arc::new(Mutex::new(History::open(History::default_path()))),
        execution_count: 0,
    };
    tokio::spawn(shell.run(shell_queue));

    let (control_replies, control_requests) = sockets.control.split();
    let control_queue = spawn_reader("control", control_requests, codec.clone());
    let control = control::ControlSession {
        interpreter: interpreter.clone(),
        publisher: publisher.clone(),
        replies: control_replies,
        codec,
        current_cancel: current_cancel.clone(),
        shutdown: Some(shutdown_tx),
        usage: usage::UsageProbe::new(),
    };
    tokio::spawn(control.run(control_queue));

    spawn_sigint_handler(interpreter, current_cancel)?;
    Ok(shutdown_rx.await.unwrap_or(false))
}

/// Reads one ROUTER socket, verifies each message and queues it in order.
/// Refused messages are logged with the reason (never the key) and dropped.
fn spawn_reader(
    channel: &'static str,
    mut socket: RouterRecvHalf,
    codec: Codec,
) -> mpsc::UnboundedReceiver<Message> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut drops = drop_log::DropLog::new(channel);
        loop {
            let frames = match socket.recv().await {
                Ok(message) => message.into_vec(),
                Err(error) => {
                    log::debug!("{channel}: receive failed: {error}");
                    tokio::task::yield_now().await;
                    continue;
                }
            };
            match codec.decode(frames) {
                Ok(message) => {
                    if tx.send(message).is_err() {
                        break;
                    }
                }
                Err(error) => drops.warn(&error),
            }
        }
    });
    rx
}

fn spawn_sigint_handler(
    interpreter: Arc<dyn Interpreter>,
    current_cancel: shell::CurrentCancel,
) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigint = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        while sigint.recv().await.is_some() {
            log::info!("SIGINT: interrupting the running cell");
            control::interrupt(&interpreter, &current_cancel).await;
        }
    });
    Ok(())
}
