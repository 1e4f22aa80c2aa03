"""Jupyter Enterprise Gateway places ferrolab on another host over SSH, for real,
on loopback:

- an OpenSSH server the test starts on 127.0.0.2 with a throwaway host key and a
  throwaway client key plays the remote host (127.0.0.2 is loopback, but it is
  not one of this machine's own addresses, so the gateway's
  DistributedProcessProxy reaches it through SSH as it would a GPU host; for an
  address of its own, such as 127.0.0.1, it skips SSH and starts the kernel
  locally, which would prove nothing about the remote path);
- Enterprise Gateway 3.2.3 (pinned in tests/enterprise-gateway-requirements.txt, in a
  venv of its own: it needs jupyter_client < 7) with an auth
  token, `remote_hosts` = 127.0.0.2, and the kernelspec `ferrolab install
  --process-proxy distributed` writes;
- the gateway runs `ferrolab gateway-launch` over SSH; the launcher binds the
  kernel's ports, sends the connection info sealed with the gateway's public key
  to its response address, and the gateway connects to the kernel.

Checked through the gateway's REST and websocket API: the kernel starts over SSH
(sshd logs the key login; the kernel's process runs in an SSH session, not
under the gateway), a Rust cell and a magic run, output streams, an interrupt stops a loop,
with interrupt_mode "signal" the interrupt travels as {"signum": 2} to the
launcher's communication port, a shutdown ends the remote process, a wrong token
is refused; and the launcher
refuses to start without a valid response address and says why.
"""

import getpass
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import requests

from conftest import TIMEOUT, pinned_venv_python
from gateway_helpers import START_TIMEOUT, Channels, Server, auth, kill_all

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "ferrolab"
REMOTE_HOST = "127.0.0.2"
SSHD = "/usr/sbin/sshd"
REQUIREMENTS = ROOT / "tests" / "enterprise-gateway-requirements.txt"
SPEC = "ferrolab_distributed"
# The same kernel with interrupt_mode "signal": the gateway then interrupts by
# sending {"signum": 2} to the launcher's communication port.
SIGNAL_SPEC = "ferrolab_distributed_signal"


def gateway_python():
    """Enterprise Gateway's venv python: its own venv, since it needs jupyter_client < 7."""
    return pinned_venv_python("enterprise-gateway-venv", REQUIREMENTS)


def launches_of(kernel_id):
    """The `ferrolab gateway-launch` processes of one kernel (wherever they run)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        argv = process.info["cmdline"] or []
        if "gateway-launch" in argv and kernel_id in argv:
            found.append(process)
    return found


def kill_launches(kernel_id):
    kill_all(launches_of(kernel_id))


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("enterprise-gateway")
    made = {name: base / name for name in ("ssh", "home", "prefix", "logs", "kernel", "gw")}
    for path in made.values():
        path.mkdir()
    return made


@pytest.fixture(scope="module")
def sshd(dirs):
    """An OpenSSH server on REMOTE_HOST with a throwaway host key; the client key
    it accepts goes into the gateway's HOME with the host key in known_hosts."""
    assert os.access(SSHD, os.X_OK), f"{SSHD} is missing: `./kernel test` installs openssh-server"
    ssh, home = dirs["ssh"], dirs["home"]
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name,
                        "-f", str(ssh / name)], check=True)
    (ssh / "authorized_keys").write_text((ssh / "client_key.pub").read_text())
    (home / ".ssh").mkdir(mode=0o700)
    shutil.copy(ssh / "client_key", home / ".ssh" / "id_ed25519")
    os.chmod(home / ".ssh" / "id_ed25519", 0o600)
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    log = dirs["logs"] / "sshd.log"
    for _ in range(5):
        # A port that is free now; sshd refuses to start if another process took
        # it in between, and then the next one is tried.
        with socket.socket() as probe:
            probe.bind((REMOTE_HOST, 0))
            port = probe.getsockname()[1]
        config = ssh / "sshd_config"
        config.write_text("\n".join([
            f"ListenAddress {REMOTE_HOST}:{port}", f"HostKey {ssh / 'host_key'}",
            f"PidFile {ssh / 'sshd.pid'}", f"AuthorizedKeysFile {ssh / 'authorized_keys'}",
            f"AllowUsers {getpass.getuser()}", "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            "LogLevel VERBOSE", ""]))
        with open(log, "w") as out:
            process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                       stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection((REMOTE_HOST, port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        if process.poll() is None:
            break
        if "Address already in use" not in log.read_text():
            pytest.fail(f"sshd did not start:\n{log.read_text()}")
    else:
        pytest.fail(f"sshd found no free port:\n{log.read_text()}")
    host_key = (ssh / "host_key.pub").read_text().split()
    (home / ".ssh" / "known_hosts").write_text(f"[{REMOTE_HOST}]:{port} {host_key[0]} {host_key[1]}\n")
    try:
        yield {"port": port, "log": log, "pid": process.pid}
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def kernelspec(dirs):
    """`ferrolab install --process-proxy distributed`, plus the test run's private
    files (history, build cache) in its env: the remote shell starts with none of
    the test's environment."""
    passed = {name: value for name, value in os.environ.items()
              if name.startswith(("FERROLAB_", "CARGO_", "RUSTUP_")) or name == "PATH"}
    for name, interrupt_mode in ((SPEC, "message"), (SIGNAL_SPEC, "signal")):
        subprocess.run([str(BINARY), "install", "--process-proxy", "distributed", "--name", name,
                        "--prefix", str(dirs["prefix"])], check=True, capture_output=True)
        path = dirs["prefix"] / "share" / "jupyter" / "kernels" / name / "kernel.json"
        spec = json.loads(path.read_text())
        assert spec["interrupt_mode"] == "message"
        # The signal kernel logs what its communication port receives (info level).
        spec["env"] = {**passed, "FERROLAB_LOG": "info"} if name == SIGNAL_SPEC else passed
        spec["interrupt_mode"] = interrupt_mode
        path.write_text(json.dumps(spec, indent=1))


@pytest.fixture(scope="module")
def gateway(dirs, sshd, kernelspec):
    token = secrets.token_hex(16)
    env = {
        **os.environ,
        "HOME": str(dirs["home"]),  # its ~/.ssh: the client key and known_hosts
        "JUPYTER_PATH": str(dirs["prefix"] / "share" / "jupyter"),
        "JUPYTER_CONFIG_DIR": str(dirs["gw"] / "config"),
        "JUPYTER_DATA_DIR": str(dirs["gw"] / "data"),
        "JUPYTER_RUNTIME_DIR": str(dirs["gw"] / "runtime"),
        "EG_SSH_PORT": str(sshd["port"]),
        "EG_REMOTE_USER": getpass.getuser(),
        "EG_RESPONSE_IP": "127.0.0.1",
        "EG_KERNEL_LOG_DIR": str(dirs["logs"]),
        "EG_KERNEL_LAUNCH_TIMEOUT": "60",
    }
    server = Server("enterprise-gateway", [
        str(gateway_python()), "-m", "enterprise_gateway", "--ip=127.0.0.1", "--port=0",
        "--port_retries=0", f"--EnterpriseGatewayApp.auth_token={token}",
        f"--EnterpriseGatewayApp.remote_hosts={json.dumps([REMOTE_HOST])}",
        "--EnterpriseGatewayApp.list_kernels=True",
    ], env, dirs["gw"], dirs["logs"], token)
    with server.answering():
        yield server


def start_kernel(gateway, spec=SPEC):
    # The gateway refuses kernels for 'root' (its unauthorized_users); a notebook
    # client names its user in KERNEL_USERNAME.
    response = requests.post(f"{gateway.url}/api/kernels", json={"name": spec, "env": {"KERNEL_USERNAME": "student"}},
                             headers=auth(gateway.token), timeout=START_TIMEOUT + 30)
    assert response.status_code == 201, f"{response.status_code} {response.text}\n" + \
        (Path(gateway.log).read_text(errors="replace")[-4000:])
    return response.json()["id"]


@pytest.fixture(scope="module")
def kernel_id(gateway):
    kernel = start_kernel(gateway)
    try:
        with Channels(gateway, kernel) as channels:
            channels.wait_ready()
        yield kernel
    finally:
        requests.delete(f"{gateway.url}/api/kernels/{kernel}", headers=auth(gateway.token),
                        timeout=START_TIMEOUT)
        kill_launches(kernel)


def text_of(outcome):
    return "".join(content.get("text", "") for kind, content in outcome.outputs if kind == "stream")


def test_launcher_refuses_to_start_without_a_valid_response_address(tmp_path):
    # A public key made as the gateway makes its own (pycryptodome, DER, base64).
    key = subprocess.run([str(gateway_python()), "-c",
                          "import base64; from Cryptodome.PublicKey import RSA; "
                          "print(base64.b64encode(RSA.generate(1024).publickey()"
                          ".exportKey(format='DER')).decode())"],
                         check=True, capture_output=True, text=True).stdout.strip()
    cases = {
        "no address": (["--kernel-id", "k1", "--public-key", key], "no response address"),
        "not host:port": (["--kernel-id", "k1", "--response-address", "gateway", "--public-key", key],
                          "is not HOST:PORT"),
        "port 0": (["--kernel-id", "k1", "--response-address", "127.0.0.1:0", "--public-key", key],
                   "is not HOST:PORT"),
        "no key": (["--kernel-id", "k1", "--response-address", "127.0.0.1:9"], "no public key"),
    }
    env = {name: value for name, value in os.environ.items()
           if name not in ("RESPONSE_ADDRESS", "PUBLIC_KEY", "KERNEL_ID", "PORT_RANGE")}
    for case, (args, reason) in cases.items():
        result = subprocess.run([str(BINARY), "gateway-launch", *args], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, (case, result)
        assert reason in result.stderr and "nothing was started" in result.stderr, (case, result.stderr)
        assert key not in result.stderr
    # A valid address where no gateway listens: the ports it bound are given up
    # and it exits with the reason (the kernel never serves without the gateway).
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connecting is refused
        result = subprocess.run([str(BINARY), "gateway-launch", "--kernel-id", "k1",
                                 "--response-address", f"127.0.0.1:{port}", "--public-key", key],
                                env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result
    assert f"cannot send the connection info to the gateway at 127.0.0.1:{port}" in result.stderr


def test_the_kernel_starts_on_the_remote_host_over_ssh(gateway, sshd, kernel_id):
    log = sshd["log"].read_text(errors="replace")
    assert "Accepted publickey for " + getpass.getuser() in log, log
    launches = launches_of(kernel_id)
    assert len(launches) == 1, launches
    # Started in an SSH session (sshd sets SSH_CONNECTION to REMOTE_HOST's port),
    # not by the gateway.
    gateway_tree = {process.pid for process in gateway.descendants()} | {gateway.process.pid}
    assert launches[0].pid not in gateway_tree
    connection = launches[0].environ().get("SSH_CONNECTION", "").split()
    assert connection[2:] == [REMOTE_HOST, str(sshd["port"])], connection
    listed = requests.get(f"{gateway.url}/api/kernels", headers=auth(gateway.token), timeout=30)
    assert kernel_id in {kernel["id"] for kernel in listed.json()}


def test_rust_cells_and_magics_run_through_the_gateway(gateway, kernel_id):
    with Channels(gateway, kernel_id) as channels:
        outcome = channels.execute("let a = 40 + 2; a")
        assert outcome.reply["content"]["status"] == "ok", outcome.outputs
        results = [content["data"]["text/plain"] for kind, content in outcome.outputs
                   if kind == "execute_result"]
        assert results == ["42"]
        # The remote shell got the gateway's KERNEL_ID export: a magic runs there.
        outcome = channels.execute("!echo kernel id: $KERNEL_ID")
        assert outcome.reply["content"]["status"] == "ok", outcome.outputs
        assert text_of(outcome).strip() == f"kernel id: {kernel_id}"


def interrupt_a_loop(gateway, channels, kernel_id):
    """Starts an endless printing loop, interrupts it through the gateway once it
    printed, and checks the reply and that the next cell runs."""
    msg_id = channels.start(
        'for i in 0.. { println!("tick {i}"); std::thread::sleep(std::time::Duration::from_millis(200)); }')
    deadline = time.monotonic() + TIMEOUT
    seen = []
    while True:
        message = channels.next(deadline)
        assert message is not None, f"the loop never printed within {TIMEOUT}s: {seen}"
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        seen.append(message["msg_type"])
        assert message["msg_type"] != "execute_reply", "the loop ended by itself"
        if message["msg_type"] == "stream" and "tick 0" in message["content"]["text"]:
            break
    response = requests.post(f"{gateway.url}/api/kernels/{kernel_id}/interrupt",
                             headers=auth(gateway.token), timeout=30)
    assert response.status_code == 204, response.text
    outcome = channels.finish(msg_id)
    assert outcome.reply["content"]["status"] == "error", outcome.outputs
    assert outcome.reply["content"]["ename"] == "Interrupted", outcome.reply["content"]
    outcome = channels.execute("2 + 2")
    assert [content["data"]["text/plain"] for kind, content in outcome.outputs
            if kind == "execute_result"] == ["4"]


def test_output_streams_and_an_interrupt_stops_a_loop(gateway, kernel_id):
    with Channels(gateway, kernel_id) as channels:
        interrupt_a_loop(gateway, channels, kernel_id)


def test_signals_through_the_communication_port_then_shutdown_ends_the_kernel(gateway, dirs):
    kernel = start_kernel(gateway, SIGNAL_SPEC)
    try:
        launches = launches_of(kernel)
        assert len(launches) == 1, launches
        with Channels(gateway, kernel) as channels:
            channels.wait_ready()
            # interrupt_mode "signal": the gateway sends {"signum": 2} to the port
            # the launcher reported, and the launcher interrupts the cell.
            interrupt_a_loop(gateway, channels, kernel)
        log = (dirs["logs"] / f"kernel-{kernel}.log").read_text(errors="replace")
        assert "the gateway sent signal 2" in log, log
        response = requests.delete(f"{gateway.url}/api/kernels/{kernel}",
                                   headers=auth(gateway.token), timeout=START_TIMEOUT)
        assert response.status_code == 204, response.text
        gone, alive = psutil.wait_procs(launches, timeout=60)
        assert not alive, f"the remote kernel is still running: {alive}"
        listed = requests.get(f"{gateway.url}/api/kernels", headers=auth(gateway.token), timeout=30)
        assert kernel not in {item["id"] for item in listed.json()}
    finally:
        kill_launches(kernel)


def test_the_gateway_refuses_a_wrong_token(gateway):
    for headers in ({}, auth("wrong-" + gateway.token)):
        response = requests.get(f"{gateway.url}/api/kernels", headers=headers, timeout=30)
        assert response.status_code in (401, 403), (headers, response.status_code)
    response = requests.get(f"{gateway.url}/api/kernels", headers=auth(gateway.token), timeout=30)
    assert response.status_code == 200
