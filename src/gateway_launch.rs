//! `ferrolab gateway-launch`: the kernel as Jupyter Enterprise Gateway starts
//! it on a remote host or in a pod.
//!
//! Order matters: the arguments are checked first (a missing or bad response
//! address or key ends the process with the reason, before anything is bound
//! or sent); then the five kernel sockets and the communication port are
//! bound (inside the gateway's port range when it gives one); only then is
//! the connection info — with a signing key made here — sealed for the
//! gateway and sent; then the kernel serves as `ferrolab kernel` would. A
//! signal request from the gateway is delivered to this process, where
//! SIGINT interrupts the running cell and SIGTERM shuts down cleanly.

use crate::protocol::{ConnectionInfo, Transport};
use ferrolab_gateway_launcher::{CommEvent, LaunchSettings, comm, ports, seal};
use std::net::IpAddr;

/// Runs the kernel for the gateway until it is shut down.
pub fn run(settings: LaunchSettings, kernel_name: &str) -> anyhow::Result<()> {
    let interpreter = crate::prepare_interpreter(kernel_name);
    let mut info = ConnectionInfo {
        transport: Transport::Tcp,
        // The gateway connects from its own host; the HMAC key it receives
        // sealed is what keeps other peers out.
        ip: "0.0.0.0".to_owned(),
        shell_port: 0,
        iopub_port: 0,
        stdin_port: 0,
        control_port: 0,
        hb_port: 0,
        key: format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        ),
        signature_scheme: "hmac-sha256".to_owned(),
    };
    let draw = settings.ports.map(|range| move || range.candidate());
    let sockets = crate::kernel::bind(
        &mut info,
        draw.as_ref().map(|draw| draw as &dyn Fn() -> u16),
    )?;
    let comm_listener = ports::bind_listener(settings.ports).map_err(|error| {
        anyhow::anyhow!("cannot bind the gateway's communication port: {error}")
    })?;
    let comm_port = comm_listener.local_addr()?.port();
    let report = connection_report(&info, comm_port, &settings.kernel_id);
    let sealed = seal::seal(report.to_string().as_bytes(), &settings.public_key)
        .map_err(|error| anyhow::anyhow!("cannot encrypt the connection info: {error}"))?;
    seal::send(&settings.response, &sealed).map_err(|error| {
        anyhow::anyhow!(
            "cannot send the connection info to the gateway at {}:{}: {error}",
            settings.response.host,
            settings.response.port
        )
    })?;
    log::info!(
        "kernel {} reported to the gateway at {}:{} (shell port {}, communication port {comm_port})",
        settings.kernel_id,
        settings.response.host,
        settings.response.port,
        info.shell_port
    );
    let gateway: Vec<IpAddr> = settings
        .gateway_addresses
        .iter()
        .map(|address| address.ip())
        .collect();
    std::thread::Builder::new()
        .name("gateway-comm".to_owned())
        .spawn(move || {
            comm::serve(&comm_listener, &gateway, obey);
            log::info!("the gateway asked the communication port to stop listening");
        })?;
    crate::kernel::serve_bound(info, sockets, interpreter)
}

/// What the gateway reads back: the connection file's fields plus where to
/// send signals (pid, process group, communication port) and the kernel id.
fn connection_report(info: &ConnectionInfo, comm_port: u16, kernel_id: &str) -> serde_json::Value {
    let pid = std::process::id();
    // SAFETY: getpgid(0) only reads this process's group.
    let pgid = unsafe { libc::getpgid(0) };
    serde_json::json!({
        "shell_port": info.shell_port,
        "iopub_port": info.iopub_port,
        "stdin_port": info.stdin_port,
        "control_port": info.control_port,
        "hb_port": info.hb_port,
        "ip": info.ip,
        "key": info.key,
        "transport": "tcp",
        "signature_scheme": info.signature_scheme,
        "kernel_name": "",
        "pid": pid,
        "pgid": pgid,
        "comm_port": comm_port,
        "kernel_id": kernel_id,
    })
}

/// Delivers a gateway signal to this process; logs a refused request.
fn obey(event: CommEvent) {
    match event {
        CommEvent::Signal(signum) => {
            log::info!("the gateway sent signal {signum}");
            // SAFETY: signals this process only; the number is one of the
            // four the communication port lets through.
            unsafe { libc::kill(libc::getpid(), signum) };
        }
        CommEvent::Refused { peer, why } => {
            let peer = peer.map_or_else(|| "?".to_owned(), |peer| peer.to_string());
            log::warn!("refused a request on the gateway's communication port from {peer}: {why}");
        }
    }
}
