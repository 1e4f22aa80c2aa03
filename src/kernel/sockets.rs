//! Binds the five kernel sockets named by the connection file.
//!
//! Binds only to the address the connection file gives. For `ipc`, a stale
//! socket file left by a killed kernel is removed before binding (a restart
//! reuses the same paths).

use crate::protocol::{ConnectionInfo, Transport};
use zeromq::{PubSocket, RepSocket, RouterSocket, Socket};

pub struct Sockets {
    pub shell: RouterSocket,
    pub control: RouterSocket,
    pub stdin: RouterSocket,
    pub iopub: PubSocket,
    pub heartbeat: RepSocket,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot bind the {channel} socket to {endpoint}: {reason}")]
pub struct BindError {
    pub channel: &'static str,
    pub endpoint: String,
    pub reason: String,
}

pub async fn bind_all(info: &ConnectionInfo) -> Result<Sockets, BindError> {
    Ok(Sockets {
        shell: bind(RouterSocket::new(), info, "shell", info.shell_port).await?,
        control: bind(RouterSocket::new(), info, "control", info.control_port).await?,
        stdin: bind(RouterSocket::new(), info, "stdin", info.stdin_port).await?,
        iopub: bind(PubSocket::new(), info, "iopub", info.iopub_port).await?,
        heartbeat: bind(RepSocket::new(), info, "heartbeat", info.hb_port).await?,
    })
}

async fn bind<S: Socket>(
    mut socket: S,
    info: &ConnectionInfo,
    channel: &'static str,
    port: u16,
) -> Result<S, BindError> {
    let endpoint = info.endpoint(port);
    if info.transport == Transport::Ipc {
        remove_stale_ipc_file(&format!("{}-{port}", info.ip));
    }
    socket.bind(&endpoint).await.map_err(|error| BindError {
        channel,
        endpoint: endpoint.clone(),
        reason: error.to_string(),
    })?;
    Ok(socket)
}

fn remove_stale_ipc_file(path: &str) {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(metadata) = std::fs::symlink_metadata(path)
        && metadata.file_type().is_socket()
    {
        let _ = std::fs::remove_file(path);
    }
}
