//! The real `ferrolab` binary over ZeroMQ, driven by a small Rust client:
//! signatures, replays, malformed frames, heartbeat, busy/idle and shutdown.
//! None of these need a Rust cell, so no evcxr compile is waited for.

use bytes::Bytes;
use ferrolab::protocol::{Codec, Message, Signer};
use serde_json::{Value, json};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::timeout;
use zeromq::{DealerSocket, ReqSocket, Socket, SocketRecv, SocketSend, SubSocket, ZmqMessage};

const WAIT: Duration = Duration::from_secs(30);

struct TestKernel {
    child: Child,
    _dir: tempfile::TempDir,
    key: String,
    shell: DealerSocket,
    control: DealerSocket,
    iopub: SubSocket,
    heartbeat: ReqSocket,
    log: PathBuf,
}

/// `count` distinct free ports: every listener is held until all are chosen
/// (a port released at once can be handed out again by the next bind, and
/// two sockets on one port would stop the kernel from starting).
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().unwrap().port())
        .collect()
}

impl TestKernel {
    async fn start(key: &str) -> TestKernel {
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(5);
        let connection = json!({
            "transport": "tcp", "ip": "127.0.0.1", "key": key, "signature_scheme": "hmac-sha256",
            "shell_port": ports[0], "iopub_port": ports[1], "stdin_port": ports[2],
            "control_port": ports[3], "hb_port": ports[4], "kernel_name": "ferrolab"
        });
        let file = dir.path().join("kernel.json");
        std::fs::write(&file, connection.to_string()).unwrap();
        let log = dir.path().join("kernel.log");
        let child = Command::new(env!("CARGO_BIN_EXE_ferrolab"))
            .args(["kernel", "--connection-file"])
            .arg(&file)
            .env("FERROLAB_LOG", "info")
            .env("FERROLAB_LOG_FILE", &log)
            .env("FERROLAB_HISTORY_FILE", dir.path().join("history.jsonl"))
            // This kernel is the one under test: no warm spare adopts it or outlives it.
            .env("FERROLAB_SPARE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let endpoint = |port: u16| format!("tcp://127.0.0.1:{port}");
        let mut shell = DealerSocket::new();
        shell.connect(&endpoint(ports[0])).await.unwrap();
        let mut iopub = SubSocket::new();
        iopub.connect(&endpoint(ports[1])).await.unwrap();
        iopub.subscribe("").await.unwrap();
        let mut control = DealerSocket::new();
        control.connect(&endpoint(ports[3])).await.unwrap();
        let mut heartbeat = ReqSocket::new();
        heartbeat.connect(&endpoint(ports[4])).await.unwrap();
        let mut kernel = TestKernel {
            child,
            _dir: dir,
            key: key.to_owned(),
            shell,
            control,
            iopub,
            heartbeat,
            log,
        };
        kernel.wait_for_iopub().await;
        kernel
    }

    /// Like jupyter_client's wait_for_ready: PUB drops messages until the
    /// subscription has reached the kernel, so ask until IOPub answers.
    async fn wait_for_iopub(&mut self) {
        let codec = self.codec();
        for _ in 0..60 {
            let request = self.request("kernel_info_request", json!({}));
            Self::send(&mut self.shell, codec.encode(&request)).await;
            Self::recv(&mut self.shell, &codec).await;
            if timeout(Duration::from_millis(500), self.iopub.recv())
                .await
                .is_ok()
            {
                return;
            }
        }
        panic!("IOPub never delivered a message");
    }

    fn codec(&self) -> Codec {
        Codec::new(&self.key)
    }

    fn request(&self, msg_type: &str, content: Value) -> Message {
        Message::new(msg_type, "test-client", content, json!({}))
    }

    async fn send(socket: &mut DealerSocket, frames: Vec<Bytes>) {
        socket
            .send(ZmqMessage::try_from(frames).unwrap())
            .await
            .unwrap();
    }

    async fn recv(socket: &mut DealerSocket, codec: &Codec) -> Message {
        let frames = timeout(WAIT, socket.recv())
            .await
            .expect("no reply")
            .unwrap();
        codec.decode(frames.into_vec()).unwrap()
    }

    /// IOPub messages until `idle` for `parent`.
    async fn iopub_until_idle(&mut self, parent: &str) -> Vec<Message> {
        let codec = Codec::new(&self.key);
        let mut seen = Vec::new();
        loop {
            let frames = timeout(WAIT, self.iopub.recv())
                .await
                .expect("no iopub")
                .unwrap();
            let message = codec.decode(frames.into_vec()).unwrap();
            if message.parent_msg_id() != Some(parent) {
                continue;
            }
            let idle =
                message.msg_type() == "status" && message.content["execution_state"] == "idle";
            seen.push(message);
            if idle {
                return seen;
            }
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn shutdown(mut self) {
        let codec = self.codec();
        let request = self.request("shutdown_request", json!({"restart": false}));
        Self::send(&mut self.control, codec.encode(&request)).await;
        let reply = Self::recv(&mut self.control, &codec).await;
        assert_eq!(reply.msg_type(), "shutdown_reply");
        assert_eq!(reply.content, json!({"status": "ok", "restart": false}));
        let status = wait_for_exit(&mut self.child, Duration::from_secs(15));
        assert!(
            status.is_some_and(|s| s.success()),
            "kernel did not exit cleanly: {status:?}"
        );
    }
}

impl Drop for TestKernel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn kernel_info_is_wrapped_in_busy_and_idle_and_answered_on_both_channels() {
    let mut kernel = TestKernel::start("test-key").await;
    let codec = kernel.codec();
    for on_control in [false, true] {
        let request = kernel.request("kernel_info_request", json!({}));
        let socket = if on_control {
            &mut kernel.control
        } else {
            &mut kernel.shell
        };
        TestKernel::send(socket, codec.encode(&request)).await;
        let reply = TestKernel::recv(socket, &codec).await;
        assert_eq!(reply.msg_type(), "kernel_info_reply");
        assert_eq!(reply.parent_msg_id(), Some(request.header.msg_id.as_str()));
        assert_eq!(reply.header.version, "5.5");
        assert_eq!(reply.content["protocol_version"], "5.5");
        assert_eq!(
            reply.content["supported_features"],
            json!(["kernel subshells"])
        );
        assert_eq!(reply.content["language_info"]["name"], "rust");
        assert_eq!(reply.content["language_info"]["file_extension"], ".rs");
        let iopub = kernel.iopub_until_idle(&request.header.msg_id).await;
        let states: Vec<&str> = iopub
            .iter()
            .map(|m| m.content["execution_state"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(states, ["busy", "idle"]);
    }
    kernel.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeat_echoes() {
    let mut kernel = TestKernel::start("k").await;
    for payload in [&b"ping"[..], b"\x00binary\xff"] {
        kernel
            .heartbeat
            .send(ZmqMessage::from(payload.to_vec()))
            .await
            .unwrap();
        let echo = timeout(WAIT, kernel.heartbeat.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echo.get(0).unwrap().as_ref(), payload);
    }
    kernel.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrongly_signed_replayed_and_malformed_messages_are_dropped() {
    let mut kernel = TestKernel::start("the-real-key").await;
    let codec = kernel.codec();

    let forged = kernel.request("kernel_info_request", json!({}));
    TestKernel::send(
        &mut kernel.shell,
        Codec::new("a-guessed-key").encode(&forged),
    )
    .await;
    TestKernel::send(
        &mut kernel.shell,
        vec![Bytes::from_static(b"no delimiter at all")],
    )
    .await;
    TestKernel::send(
        &mut kernel.shell,
        vec![
            Bytes::from_static(b"<IDS|MSG>"),
            Bytes::from_static(b"deadbeef"),
        ],
    )
    .await;
    let first = kernel.request("kernel_info_request", json!({}));
    let first_frames = codec.encode(&first);
    TestKernel::send(&mut kernel.shell, first_frames.clone()).await;
    TestKernel::send(&mut kernel.shell, first_frames).await; // replay
    let second = kernel.request("kernel_info_request", json!({}));
    TestKernel::send(&mut kernel.shell, codec.encode(&second)).await;

    // Only the two genuine requests are answered, in order.
    let reply = TestKernel::recv(&mut kernel.shell, &codec).await;
    assert_eq!(reply.parent_msg_id(), Some(first.header.msg_id.as_str()));
    let reply = TestKernel::recv(&mut kernel.shell, &codec).await;
    assert_eq!(reply.parent_msg_id(), Some(second.header.msg_id.as_str()));

    let log = kernel.log_text();
    assert!(log.contains("signature does not match"), "{log}");
    assert!(log.contains("replay"), "{log}");
    assert!(log.contains("no <IDS|MSG> delimiter"), "{log}");
    assert!(
        !log.contains("the-real-key") && !log.contains("a-guessed-key"),
        "{log}"
    );
    kernel.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unsigned_sessions_work_with_an_empty_key() {
    let mut kernel = TestKernel::start("").await;
    let codec = kernel.codec();
    let request = kernel.request("is_complete_request", json!({"code": "fn f() {"}));
    TestKernel::send(&mut kernel.shell, codec.encode(&request)).await;
    let reply = TestKernel::recv(&mut kernel.shell, &codec).await;
    assert_eq!(
        reply.content,
        json!({"status": "incomplete", "indent": "    "})
    );
    kernel.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_request_content_gets_an_error_reply() {
    let mut kernel = TestKernel::start("k").await;
    let codec = kernel.codec();
    let request = kernel.request("complete_request", json!({"no_code_field": true}));
    TestKernel::send(&mut kernel.shell, codec.encode(&request)).await;
    let reply = TestKernel::recv(&mut kernel.shell, &codec).await;
    assert_eq!(reply.content["status"], "error");
    assert_eq!(reply.content["ename"], "BadRequest");
    kernel.shutdown().await;
}

/// `request` with one JSON frame (`part`: 0 header, 1 parent, 2 metadata,
/// 3 content) replaced by JSON nested `depth` deep, and signed again.
fn deeply_nested(key: &str, request: &Message, part: usize, depth: usize) -> Vec<Bytes> {
    let mut frames = Codec::new(key).encode(request);
    let delimiter = frames
        .iter()
        .position(|f| f.as_ref() == b"<IDS|MSG>")
        .unwrap();
    let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    frames[delimiter + 2 + part] = Bytes::from(deep);
    let signed: Vec<&[u8]> = frames[delimiter + 2..delimiter + 6]
        .iter()
        .map(|f| f.as_ref())
        .collect();
    let signature = Signer::new(key).sign(&signed);
    frames[delimiter + 1] = Bytes::from(signature);
    frames
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_nested_deeper_than_the_parser_allows_get_an_error_reply() {
    let mut kernel = TestKernel::start("k").await;
    let codec = kernel.codec();
    let execute = kernel.request("execute_request", json!({}));
    let frames = deeply_nested("k", &execute, 3, 10_000);
    TestKernel::send(&mut kernel.shell, frames).await;
    let reply = TestKernel::recv(&mut kernel.shell, &codec).await;
    assert_eq!(reply.msg_type(), "execute_reply");
    assert_eq!(reply.parent_msg_id(), Some(execute.header.msg_id.as_str()));
    assert_eq!(reply.content["status"], "error");
    assert_eq!(reply.content["ename"], "BadRequest");
    assert!(
        reply.content["execution_count"].is_u64(),
        "{}",
        reply.content
    );
    let evalue = reply.content["evalue"].as_str().unwrap();
    assert!(evalue.contains("recursion limit"), "{evalue}");
    let states: Vec<Value> = kernel
        .iopub_until_idle(&execute.header.msg_id)
        .await
        .iter()
        .map(|m| m.content["execution_state"].clone())
        .collect();
    assert_eq!(states, [json!("busy"), json!("idle")]);

    let info = kernel.request("kernel_info_request", json!({}));
    TestKernel::send(&mut kernel.control, deeply_nested("k", &info, 2, 10_000)).await;
    let reply = TestKernel::recv(&mut kernel.control, &codec).await;
    assert_eq!(reply.msg_type(), "kernel_info_reply");
    assert_eq!(reply.content["status"], "error");
    assert!(
        reply.content["evalue"]
            .as_str()
            .unwrap()
            .contains("metadata")
    );
    kernel.shutdown().await;
}

#[test]
fn a_missing_connection_file_is_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_ferrolab"))
        .args([
            "kernel",
            "--connection-file",
            "/nonexistent/kernel-xyz.json",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/kernel-xyz.json"), "{stderr}");
    assert!(stderr.contains("cannot read connection file"), "{stderr}");
}

#[test]
fn version_and_install_round_trip() {
    let version = Command::new(env!("CARGO_BIN_EXE_ferrolab"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("ferrolab "));
    let prefix = tempfile::tempdir().unwrap();
    let install = Command::new(env!("CARGO_BIN_EXE_ferrolab"))
        .args(["install", "--prefix"])
        .arg(prefix.path())
        .args(["--name", "ferrolab-it", "--display-name", "Rust (it)"])
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "{}",
        String::from_utf8_lossy(&install.stderr)
    );
    let spec_path = prefix
        .path()
        .join("share/jupyter/kernels/ferrolab-it/kernel.json");
    let spec: Value = serde_json::from_str(&std::fs::read_to_string(&spec_path).unwrap()).unwrap();
    assert_eq!(spec["display_name"], "Rust (it)");
    assert_eq!(spec["interrupt_mode"], "message");
    let uninstall = Command::new(env!("CARGO_BIN_EXE_ferrolab"))
        .args(["uninstall", "--prefix"])
        .arg(prefix.path())
        .args(["--name", "ferrolab-it"])
        .output()
        .unwrap();
    assert!(uninstall.status.success());
    assert!(!spec_path.exists());
}
