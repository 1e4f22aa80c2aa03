//! What a launcher and a spare say to each other over the spare's Unix
//! socket: one JSON object per line; the launcher's standard streams travel
//! as file descriptors (`SCM_RIGHTS`) on one marker byte before its request.
//!
//! Invariant: both ends check that the peer runs as the same user before
//! reading a request or trusting an answer.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

/// Launcher (or `ferrolab spare`) → spare.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Become the kernel for this connection file.
    Adopt {
        connection_file: PathBuf,
        cwd: PathBuf,
        env: BTreeMap<String, String>,
        key: String,
    },
    /// Say how you are.
    Status,
    /// End yourself (another environment's spare takes over, or the user asked).
    Retire,
}

/// Spare → launcher.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// The kernel now runs in process `pid`.
    Adopted {
        pid: u32,
    },
    /// Not adopted; the launcher starts the kernel itself.
    Refused {
        reason: String,
    },
    /// The kernel ended with this status (the launcher's own exit status).
    Exited {
        code: i32,
    },
    Status {
        pid: u32,
        key: String,
        /// Whether the engine has started and warmed up.
        ready: bool,
        /// Seconds since the spare started.
        age_s: u64,
        /// The `:dep` lines it has built and loaded for its notebook.
        #[serde(default)]
        loaded: Vec<String>,
    },
    Retiring,
}

/// Sends one message as a line.
pub fn send<T: Serialize>(stream: &mut UnixStream, message: &T) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

/// Reads one message line; `Ok(None)` at end of file.
pub fn receive<T: for<'de> Deserialize<'de>>(
    reader: &mut BufReader<UnixStream>,
) -> std::io::Result<Option<T>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    serde_json::from_str(&line)
        .map(Some)
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error))
}

/// The uid of the process at the other end.
pub fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
    let mut credentials = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut length = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes a ucred of the length we pass into memory we own.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut credentials as *mut libc::ucred).cast(),
            &mut length,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(credentials.uid)
}

/// Refuses a peer that is not this user.
pub fn check_peer(stream: &UnixStream) -> std::io::Result<()> {
    let theirs = peer_uid(stream)?;
    // SAFETY: getuid cannot fail.
    let ours = unsafe { libc::getuid() };
    if theirs != ours {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("peer runs as uid {theirs}, not {ours}"),
        ));
    }
    Ok(())
}

/// Sends the marker byte carrying `fds`.
pub fn send_fds(stream: &UnixStream, fds: &[RawFd]) -> std::io::Result<()> {
    use sendfd::SendWithFd;
    let sent = stream.send_with_fd(b"F", fds)?;
    if sent != 1 {
        return Err(std::io::Error::other("the descriptors were not sent"));
    }
    Ok(())
}

/// Receives the marker byte and the descriptors it carries.
pub fn receive_fds(stream: &UnixStream, most: usize) -> std::io::Result<Vec<OwnedFd>> {
    use sendfd::RecvWithFd;
    let mut byte = [0u8; 1];
    let mut fds = vec![-1 as RawFd; most];
    let (bytes, count) = stream.recv_with_fd(&mut byte, &mut fds)?;
    // SAFETY: the kernel just installed these descriptors in this process; nothing else owns them.
    let owned: Vec<OwnedFd> = fds[..count]
        .iter()
        .map(|fd| unsafe { OwnedFd::from_raw_fd(*fd) })
        .collect();
    if bytes != 1 || byte != *b"F" {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "expected the descriptor marker",
        ));
    }
    Ok(owned)
}
