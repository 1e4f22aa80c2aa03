//! The launcher: `ferrolab kernel -f FILE` hands the connection to a warm
//! spare when one is waiting for this environment, then stays as the process
//! Jupyter knows until the kernel ends.
//!
//! Invariants: anything short of a spare's `adopted` answer leaves the
//! launcher to start the kernel itself (nothing was bound yet, so nothing is
//! lost); once adopted, the launcher never runs a kernel itself, passes on
//! SIGTERM, SIGINT, SIGHUP and SIGQUIT, and exits with the kernel's status (1
//! if the kernel vanished without one). Killing the launcher ends the kernel:
//! the spare watches the socket.

use super::wire::{self, Answer, Request};
use super::{Key, Settings, process_env};
use std::io::BufReader;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long a spare may take to answer an adoption.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs the kernel in a spare if one adopts it: `Some(exit status)` when the
/// kernel ran there and has ended; `None` when the caller must run it.
pub fn run_in_spare(connection_file: &Path, kernel_name: &str) -> Option<i32> {
    let settings = Settings::from_env();
    if !settings.enabled {
        return None;
    }
    let (stream, pid) = match adopt(&settings, connection_file, kernel_name) {
        Ok(Some(adopted)) => adopted,
        Ok(None) => return None,
        Err(error) => {
            eprintln!("ferrolab: the warm spare did not take this kernel ({error}); starting one");
            return None;
        }
    };
    Some(follow(stream, pid))
}

/// Asks the spare for this environment to adopt the connection.
fn adopt(
    settings: &Settings,
    connection_file: &Path,
    kernel_name: &str,
) -> std::io::Result<Option<(UnixStream, u32)>> {
    let env = process_env();
    let key = Key::new(kernel_name, &env);
    settings.private_dir()?;
    let socket = settings.socket(key.as_str());
    let mut stream = match UnixStream::connect(&socket) {
        Ok(stream) => stream,
        // No spare for this environment (or it just went away).
        Err(_) => return Ok(None),
    };
    wire::check_peer(&stream)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    let cwd = std::env::current_dir()?;
    let standard = standard_fds()?;
    let raw: Vec<i32> = standard.iter().map(|fd| fd.as_raw_fd()).collect();
    wire::send_fds(&stream, &raw)?;
    drop(standard);
    wire::send(
        &mut stream,
        &Request::Adopt {
            connection_file: cwd.join(connection_file),
            cwd,
            env,
            key: key.as_str().to_owned(),
        },
    )?;
    let mut reader = BufReader::new(stream.try_clone()?);
    match wire::receive::<Answer>(&mut reader)? {
        Some(Answer::Adopted { pid }) => {
            stream.set_read_timeout(None)?;
            Ok(Some((reader.into_inner(), pid)))
        }
        Some(Answer::Refused { reason }) => Err(std::io::Error::other(reason)),
        // It closed without an answer: it adopted another launch a moment before.
        None => Ok(None),
        other => Err(std::io::Error::other(format!(
            "unexpected answer {other:?}"
        ))),
    }
}

/// Copies of fds 0, 1 and 2 (`/dev/null` for one that is closed).
fn standard_fds() -> std::io::Result<Vec<std::os::fd::OwnedFd>> {
    (0..3)
        .map(|fd| {
            crate::os::fds::duplicate(fd).or_else(|_| {
                let null = std::fs::OpenOptions::new()
                    .read(fd == 0)
                    .write(fd != 0)
                    .open("/dev/null")?;
                Ok(null.into())
            })
        })
        .collect()
}

/// Passes signals on to the kernel in `pid` until it reports its status.
fn follow(stream: UnixStream, pid: u32) -> i32 {
    let (status_tx, status_rx) = tokio::sync::oneshot::channel::<i32>();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let code = loop {
            match wire::receive::<Answer>(&mut reader) {
                Ok(Some(Answer::Exited { code })) => break code,
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break 1,
            }
        };
        let _ = status_tx.send(code);
    });
    let forwarded = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(_) => return status_rx.blocking_recv().unwrap_or(1),
    };
    runtime.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (signal_tx, mut signal_rx) = tokio::sync::mpsc::unbounded_channel();
        for number in forwarded {
            if let Ok(mut stream) = signal(SignalKind::from_raw(number)) {
                let tx = signal_tx.clone();
                tokio::spawn(async move {
                    while stream.recv().await.is_some() {
                        if tx.send(number).is_err() {
                            break;
                        }
                    }
                });
            }
        }
        let mut status_rx = status_rx;
        loop {
            tokio::select! {
                code = &mut status_rx => return code.unwrap_or(1),
                Some(number) = signal_rx.recv() => {
                    // SAFETY: kill with a pid and a signal number; failure only means it is gone.
                    unsafe { libc::kill(pid as libc::pid_t, number) };
                }
            }
        }
    })
}
