//! Sockets and the session: everything between the wire and the interpreter.
//!
//! Each libzmq socket is owned by one thread (`transport`): the shell and
//! control threads verify requests and queue them for their sessions, which
//! run as tokio tasks; the IOPub, stdin and heartbeat threads do their whole
//! job themselves. Shell requests go to the main shell or to the subshell
//! their header names (`subshells`); an interrupt is kernel-wide.
//! `starting` is published once; `kernel_info` is answered immediately while the
//! interpreter warms up in the background. SIGINT means "interrupt" and never
//! ends the process; a `shutdown_request` replies, stops the interpreter's
//! children and exits; SIGTERM does the same without a reply.
//!
//! This layer knows nothing about Rust or magics: it talks to an
//! [`Interpreter`] and hands each cell a [`CellContext`]. That boundary and
//! the sockets' are where `tests` cuts: a fake interpreter and a recording of
//! what the sockets would send run the sessions in-process, in milliseconds.

mod cell_context;
mod control;
mod drop_log;
mod heartbeat;
pub mod history;
mod info;
pub mod interpreter;
mod iopub;
pub mod output_budget;
mod requests;
mod running_cells;
mod shell;
mod sockets;
mod stdin;
pub mod stream_batch;
mod subshells;
#[cfg(test)]
mod tests;
pub mod transport;
mod usage;

pub use cell_context::{CellContext, InputError, StreamName};
pub use interpreter::{Completeness, Completions, ExecuteOutcome, Interpreter, KernelIdentity};

use crate::protocol::{Codec, ConnectionInfo};
use history::History;
use running_cells::RunningCells;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use transport::SocketThreads;

/// Serves the kernel described by `connection_file` until a shutdown request.
pub fn serve(connection_file: &Path, interpreter: Arc<dyn Interpreter>) -> anyhow::Result<()> {
    let mut info = ConnectionInfo::from_file(connection_file)?;
    let sockets = bind(&mut info, None)?;
    serve_bound(info, sockets, interpreter)
}

/// The five sockets, bound before the kernel serves them.
pub use sockets::Sockets;

/// Binds the sockets `info` names; a TCP port of 0 becomes a bound port
/// (drawn from `draw_port` when given) and is written back into `info`.
pub fn bind(
    info: &mut ConnectionInfo,
    draw_port: Option<&dyn Fn() -> u16>,
) -> anyhow::Result<Sockets> {
    Ok(sockets::bind_all(
        info,
        transport::max_message_bytes(),
        draw_port,
    )?)
}

/// Serves already-bound sockets until shutdown (see [`serve`]).
pub fn serve_bound(
    info: ConnectionInfo,
    sockets: Sockets,
    interpreter: Arc<dyn Interpreter>,
) -> anyhow::Result<()> {
    let limit = transport::max_message_bytes();
    log::info!(
        "listening on {} (transport {:?}, messages up to {limit} bytes)",
        info.endpoint(info.shell_port),
        info.transport
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ferrolab-io")
        .enable_all()
        .build()?;
    let mut threads = SocketThreads::default();
    let restart = runtime.block_on(async {
        tokio::select! {
            served = serve_async(info, sockets, limit, &mut threads, interpreter.clone()) => served,
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
    // Last: the shutdown reply and the final idle still leave.
    threads.close();
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
    sockets: sockets::Sockets,
    limit: usize,
    threads: &mut SocketThreads,
    interpreter: Arc<dyn Interpreter>,
) -> anyhow::Result<bool> {
    let codec = Codec::new(&info.key);
    let session: Arc<str> = uuid::Uuid::new_v4().to_string().into();

    let publisher = iopub::Publisher::spawn(
        threads,
        sockets.iopub,
        limit,
        codec.clone(),
        session.clone(),
    )?;
    publisher.status("starting", &serde_json::json!({}));
    heartbeat::spawn(threads, sockets.heartbeat, limit)?;
    let stdin_calls = stdin::spawn(threads, sockets.stdin, limit, codec.clone())?;
    interpreter.start();

    let running = RunningCells::default();
    let (shutdown_tx, shutdown_rx) = oneshot::channel();

    let (shell_queue, shell_replies) =
        requests::spawn(threads, "shell", sockets.shell, limit, codec.clone())?;
    let subshells = subshells::Subshells::new(shell::ShellParts {
        interpreter: interpreter.clone(),
        publisher: publisher.clone(),
        replies: shell_replies,
        codec: codec.clone(),
        stdin: stdin_calls,
        running: running.clone(),
    });
    subshells.serve(
        shell_queue,
        Arc::new(Mutex::new(History::open(History::default_path()))),
    );

    let (control_queue, control_replies) =
        requests::spawn(threads, "control", sockets.control, limit, codec.clone())?;
    let control = control::ControlSession {
        interpreter: interpreter.clone(),
        publisher: publisher.clone(),
        replies: control_replies,
        codec,
        running: running.clone(),
        subshells,
        shutdown: Some(shutdown_tx),
        usage: usage::UsageProbe::new(),
    };
    tokio::spawn(control.run(control_queue));

    spawn_sigint_handler(interpreter, running, publisher)?;
    Ok(shutdown_rx.await.unwrap_or(false))
}

fn spawn_sigint_handler(
    interpreter: Arc<dyn Interpreter>,
    running: RunningCells,
    publisher: iopub::Publisher,
) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigint = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        while sigint.recv().await.is_some() {
            log::info!("SIGINT: interrupting the running cell");
            control::interrupt(&interpreter, &running, &publisher).await;
        }
    });
    Ok(())
}
