//! Binds the five kernel sockets named by the connection file (libzmq).
//!
//! Binds only to the address the connection file gives. A TCP port of 0 is
//! chosen here: any free port, or one drawn from a caller's range (a gateway's
//! `--port-range`, retried when taken), and written back into the connection
//! info, so whoever reports the ports reports ones already bound. For `ipc`, a stale
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

/// How many drawn ports are tried per socket before giving up.
const DRAWN_PORT_ATTEMPTS: usize = 32;

/// Binds the five sockets; a TCP port of 0 in `info` becomes the bound port,
/// drawn from `draw_port` when given (e.g. a gateway's port range).
pub fn bind_all(
    info: &mut ConnectionInfo,
    limit: usize,
    draw_port: Option<&dyn Fn() -> u16>,
) -> Result<Sockets, BindError> {
    let context = zmq::Context::new();
    let snapshot = info.clone();
    let open = |kind, channel: &'static str, port: &mut u16| -> Result<zmq::Socket, BindError> {
        let fail = |endpoint: &str, error: zmq::Error| BindError {
            channel,
            endpoint: endpoint.to_owned(),
            reason: error.to_string(),
        };
        let mut socket = context
            .socket(kind)
            .map_err(|error| fail(&snapshot.endpoint(*port), error))?;
        configure(&mut socket, kind, limit, &snapshot)
            .map_err(|error| fail(&snapshot.endpoint(*port), error))?;
        if snapshot.transport == Transport::Ipc {
            remove_stale_ipc_file(&format!("{}-{port}", snapshot.ip));
        }
        if snapshot.transport == Transport::Tcp && *port == 0 {
            *port = bind_chosen_port(&socket, &snapshot, draw_port)
                .map_err(|(endpoint, error)| fail(&endpoint, error))?;
            return Ok(socket);
        }
        let endpoint = snapshot.endpoint(*port);
        socket
            .bind(&endpoint)
            .map_err(|error| fail(&endpoint, error))?;
        Ok(socket)
    };
    Ok(Sockets {
        shell: open(zmq::ROUTER, "shell", &mut info.shell_port)?,
        control: open(zmq::ROUTER, "control", &mut info.control_port)?,
        stdin: open(zmq::ROUTER, "stdin", &mut info.stdin_port)?,
        iopub: open(zmq::XPUB, "iopub", &mut info.iopub_port)?,
        // A ROUTER that echoes (as ipykernel's): unlike REP it cannot be left
        // waiting to send when a request is refused.
        heartbeat: open(zmq::ROUTER, "heartbeat", &mut info.hb_port)?,
    })
}

/// Binds a TCP socket to a port this kernel picks and returns that port.
fn bind_chosen_port(
    socket: &zmq::Socket,
    info: &ConnectionInfo,
    draw_port: Option<&dyn Fn() -> u16>,
) -> Result<u16, (String, zmq::Error)> {
    let Some(draw_port) = draw_port else {
        // Port 0 is libzmq's wildcard too: the system picks a free one.
        let endpoint = info.endpoint(0);
        socket
            .bind(&endpoint)
            .map_err(|error| (endpoint.clone(), error))?;
        return bound_port(socket).ok_or((endpoint, zmq::Error::EINVAL));
    };
    let mut last = (info.endpoint(0), zmq::Error::EADDRINUSE);
    for _ in 0..DRAWN_PORT_ATTEMPTS {
        let port = draw_port();
        let endpoint = info.endpoint(port);
        match socket.bind(&endpoint) {
            Ok(()) => return Ok(port),
            Err(error) => last = (endpoint, error),
        }
    }
    Err(last)
}

/// The port a TCP socket is bound to, from libzmq's last endpoint.
fn bound_port(socket: &zmq::Socket) -> Option<u16> {
    let endpoint = socket.get_last_endpoint().ok()?.ok()?;
    endpoint.rsplit_once(':')?.1.parse().ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn info_with_ports(port: u16) -> ConnectionInfo {
        ConnectionInfo {
            transport: Transport::Tcp,
            ip: "127.0.0.1".to_owned(),
            shell_port: port,
            iopub_port: port,
            stdin_port: port,
            control_port: port,
            hb_port: port,
            key: String::new(),
            signature_scheme: "hmac-sha256".to_owned(),
        }
    }

    /// In the order `bind_all` binds them.
    fn ports(info: &ConnectionInfo) -> Vec<u16> {
        vec![
            info.shell_port,
            info.control_port,
            info.stdin_port,
            info.iopub_port,
            info.hb_port,
        ]
    }

    #[test]
    fn port_zero_becomes_the_bound_port() {
        let mut info = info_with_ports(0);
        let _sockets = bind_all(&mut info, 1 << 20, None).unwrap();
        let bound = ports(&info);
        assert!(bound.iter().all(|port| *port != 0), "{bound:?}");
        let mut distinct = bound.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 5, "{bound:?}");
        for port in bound {
            // Taken: the kernel holds it.
            assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
        }
    }

    #[test]
    fn drawn_ports_are_retried_when_taken() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let free: Vec<u16> = (0..5)
            .map(|_| {
                let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                probe.local_addr().unwrap().port()
            })
            .collect();
        // Every socket is first offered the taken port, then a free one.
        let offers = std::sync::Mutex::new(Vec::new());
        let draw = || {
            let mut offers = offers.lock().unwrap();
            let port = if offers.len() % 2 == 0 {
                taken_port
            } else {
                free[offers.len() / 2]
            };
            offers.push(port);
            port
        };
        let mut info = info_with_ports(0);
        let bound = bind_all(&mut info, 1 << 20, Some(&draw));
        let offered = offers.lock().unwrap().clone();
        bound.unwrap_or_else(|error| panic!("{error} (offered {offered:?})"));
        assert_eq!(ports(&info), free, "offered {offered:?}");
        assert_eq!(offered.len(), 10);
        drop(taken);
    }

    #[test]
    fn a_fixed_port_that_is_taken_is_an_error_that_names_the_channel() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut info = info_with_ports(taken.local_addr().unwrap().port());
        let error = bind_all(&mut info, 1 << 20, None).err().unwrap();
        assert_eq!(error.channel, "shell");
        assert!(error.endpoint.starts_with("tcp://127.0.0.1:"));
    }
}
