//! The heartbeat: echo every request back, on its own task, independent of
//! whatever the shell is doing.

use zeromq::{RepSocket, SocketRecv, SocketSend};

pub fn spawn(mut socket: RepSocket) {
    tokio::spawn(async move {
        loop {
            match socket.recv().await {
                Ok(message) => {
                    if let Err(error) = socket.send(message).await {
                        log::debug!("heartbeat: reply failed: {error}");
                    }
                }
                Err(error) => {
                    log::debug!("heartbeat: receive failed: {error}");
                }
            }
        }
    });
}
