//! The heartbeat: echo every request back, on its own thread, independent of
//! whatever the shell is doing. The socket is a ROUTER, so the echo (routing
//! identity first) reaches the REQ client that asked.

use crate::kernel::transport::{Endpoint, SocketThreads, send_frames};
use bytes::Bytes;

struct Echo;

impl Endpoint for Echo {
    type Command = ();

    fn received(&mut self, socket: &mut zmq::Socket, frames: Vec<Bytes>) {
        if let Err(error) = send_frames(socket, frames, zmq::DONTWAIT) {
            log::debug!("heartbeat: reply failed: {error}");
        }
    }

    fn command(&mut self, _socket: &mut zmq::Socket, _command: ()) {}
}

pub fn spawn(
    threads: &mut SocketThreads,
    socket: zmq::Socket,
    limit: usize,
) -> std::io::Result<()> {
    threads.spawn("heartbeat", socket, limit, Echo).map(|_| ())
}
