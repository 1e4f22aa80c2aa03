//! Binds the five kernel sockets named by the connection file (libzmq).
//!
//! Binds only to the address the connection file gives. For `ipc`, a stale
//! socket file left by a killed kernel is removed before binding (a restart
//! reuses the same paths). Every socket refuses frames larger than the
//! message limit (`ZMQ_MAXMSGSIZE`: the peer is dropped at the frame header)
//! and lingers briefly on close so the last replies still leave.

use crate::kernel::iopub;
use crate::kernel::transport::LINGER_MS;
use crate::protocol::{ConnectionInfo, Transport};

pub struct Sockets {
    pub shell: zmq::Socket,
    pub control: zmq::Socket,
    pub stdin: zmq::Socket,
    pub iopub: zmq::Socket,
    pub heartbeat: zmq::Socket,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot bind the {channel} socket to {endpoint}: {reason}")]
pub struct BindError {
    pub channel: &'static str,
    pub endpoint: String,
    pub reason: String,
}

/// Router sockets queue at most this many unread messages per peer; the
/// kernel reads them at once, so this only bounds what a peer that sends
/// faster than signatures are checked can make the kernel hold.
const ROUTER_RECEIVE_HIGH_WATER_MARK: i32 = 16;

pub fn bind_all(info: &ConnectionInfo, limit: usize) -> Result<Sockets, BindError> {
    let context = zmq::Context::new();
    let open = |kind, channel: &'static str, port: u16| -> Result<zmq::Socket, BindError> {
        let endpoint = info.endpoint(port);
        let fail = |error: zmq::Error| BindError {
            channel,
            endpoint: endpoint.clone(),
            reason: error.to_string(),
        };
        let mut socket = context.socket(kind).map_err(fail)?;
        configure(&mut socket, kind, limit, info).map_err(fail)?;
        if info.transport == Transport::Ipc {
            remove_stale_ipc_file(&format!("{}-{port}", info.ip));
        }
        socket.bind(&endpoint).map_err(fail)?;
        Ok(socket)
    };
    Ok(Sockets {
        shell: open(zmq::ROUTER, "shell", info.shell_port)?,
        control: open(zmq::ROUTER, "control", info.control_port)?,
        stdin: open(zmq::ROUTER, "stdin", info.stdin_port)?,
        iopub: open(zmq::XPUB, "iopub", info.iopub_port)?,
        // A ROUTER that echoes (as ipykernel's): unlike REP it cannot be left
        // waiting to send when a request is refused.
        heartbeat: open(zmq::ROUTER, "heartbeat", info.hb_port)?,
    })
}

fn configure(
    socket: &mut zmq::Socket,
    kind: zmq::SocketType,
    limit: usize,
    info: &ConnectionInfo,
) -> zmq::Result<()> {
    socket.set_maxmsgsize(i64::try_from(limit).unwrap_or(i64::MAX))?;
    socket.set_linger(LINGER_MS)?;
    if info.transport == Transport::Tcp && info.ip.contains(':') {
        socket.set_ipv6(true)?;
    }
    match kind {
        zmq::ROUTER => {
            socket.set_rcvhwm(ROUTER_RECEIVE_HIGH_WATER_MARK)?;
            // A client that reconnects with its old identity (jupyter_client
            // reuses the session id) takes over from the dead connection.
            socket.set_router_handover(true)?;
        }
        zmq::XPUB => {
            // Every subscription is passed up, so each new client is welcomed.
            socket.set_xpub_verbose(true)?;
            socket.set_sndhwm(iopub::SEND_HIGH_WATER_MARK)?;
            socket.set_sndtimeo(iopub::SEND_WAIT_MS)?;
            iopub::set_nodrop(socket, true)?;
        }
        _ => {}
    }
    Ok(())
}

fn remove_stale_ipc_file(path: &str) {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(metadata) = std::fs::symlink_metadata(path)
        && metadata.file_type().is_socket()
    {
        let _ = std::fs::remove_file(path);
    }
}
