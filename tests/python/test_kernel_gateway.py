"""The "UI on the laptop, kernel on the GPU VM" setup, on loopback: a Jupyter Kernel
Gateway with an auth token plays the VM, and a jupyter_server started with
`--gateway-url` and the gateway's token plays the laptop. Everything below goes
through the laptop server's REST and websocket API only, as JupyterLab would:

- the laptop lists the VM's ferrolab kernelspec (with its logo and help page) and
  starts a ferrolab kernel on it;
- the kernel gets only the environment variables the gateway is told to pass on;
- a Rust cell returns its value, and magics (`%pwd`, `!echo`) run on the VM, in
  the gateway's directory rather than the laptop's;
- output streams while a cell runs: the cell waits for a file that the test makes
  only after it has seen the cell's first line, so the line must come before the reply;
- an interrupt stops an endless loop (reply "Interrupted") and the next cell runs;
- a restart replaces the kernel process and forgets variables;
- a shutdown removes the kernel from both servers' listings and its process exits;
- the gateway refuses a client with a wrong (or no) token, on REST and on the
  websocket, and accepts the right one.

One ferrolab kernel serves the module (its first Rust cell compiles for seconds);
the shutdown test starts a second one but never compiles in it.
"""

import json
import os
import secrets
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests
import websocket  # websocket-client, a dependency of jupyter_server

from conftest import KERNEL_NAME, TIMEOUT, Outcome
from gateway_helpers import START_TIMEOUT, Channels, Server, auth
# A kernel started through jupyter_server's gateway client gets only PATH, KERNEL_*
# and the variables named in the gateway's env_process_whitelist: not the gateway's
# whole environment. Passed here: HOME (without it the kernel's caches fall back to
# the temp dir, and Rust code sees no HOME), the toolchain's homes, and the test
# run's private FERROLAB_* files (history, bookmarks, build cache).
KERNEL_ENV = sorted({"HOME", "CARGO_HOME", "RUSTUP_HOME", "TMPDIR"}
                    | {name for name in os.environ if name.startswith(("FERROLAB_", "RUSTUP_"))})
# In the gateway's environment but not on that list: the kernel must not see it.
NOT_PASSED = "GATEWAY_TEST_NOT_PASSED_ON"


def ferrolab_kernels(server):
    """The ferrolab kernel processes running under a server, by pid."""
    processes = {}
    for child in server.descendants():
        try:
            argv = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        if argv and Path(argv[0]).name == "ferrolab" and "kernel" in argv[1:2]:
            processes[child.pid] = child
    # A kernel's child caught between fork and exec still shows the kernel's command
    # line (seen once: the engine thread starting cargo as the test looked).
    return {pid: process for pid, process in processes.items() if parent_pid(process) not in processes}


def parent_pid(process):
    try:
        return process.ppid()
    except psutil.NoSuchProcess:
        return None


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("gateway")
    made = {name: base / name for name in ("vm", "laptop", "config", "logs")}
    for path in made.values():
        path.mkdir()
    return made


@pytest.fixture(scope="module")
def gateway(dirs):
    """The "GPU VM": a Kernel Gateway on loopback that wants a token."""
    token = secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(dirs["config"]), NOT_PASSED: "leaked"}
    server = Server("kernel-gateway", [
        sys.executable, "-m", "kernel_gateway", "--ip=127.0.0.1", "--port=0", "--port_retries=0",
        f"--KernelGatewayApp.auth_token={token}",
        # Lets the laptop list the VM's running kernels (off by default in the gateway).
        "--JupyterWebsocketPersonality.list_kernels=True",
        f"--KernelGatewayApp.env_process_whitelist={json.dumps(KERNEL_ENV)}",
    ], env, dirs["vm"], dirs["logs"], token)
    with server.answering():
        yield server


@pytest.fixture(scope="module")
def laptop(gateway, dirs):
    """The "laptop": a jupyter_server whose kernels all live behind the gateway."""
    token = secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(dirs["config"])}
    server = Server("laptop-jupyter-server", [
        sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1", "--port=0",
        "--ServerApp.port_retries=0", f"--ServerApp.root_dir={dirs['laptop']}",
        f"--IdentityProvider.token={token}",
        f"--gateway-url={gateway.url}", f"--GatewayClient.auth_token={gateway.token}",
        *(["--allow-root"] if os.geteuid() == 0 else []),
    ], env, dirs["laptop"], dirs["logs"], token)
    with server.answering():
        yield server


def start_kernel(laptop):
    response = requests.post(f"{laptop.url}/api/kernels", json={"name": KERNEL_NAME},
                             headers=auth(laptop.token), timeout=START_TIMEOUT)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def delete_kernel(laptop, kernel_id):
    return requests.delete(f"{laptop.url}/api/kernels/{kernel_id}", headers=auth(laptop.token),
                           timeout=START_TIMEOUT)


@pytest.fixture(scope="module")
def kernel_id(laptop, gateway):
    """The module's one ferrolab kernel, started through the laptop server."""
    kernel = start_kernel(laptop)
    try:
        with Channels(laptop, kernel) as channels:
            channels.wait_ready()
        yield kernel
    finally:
        delete_kernel(laptop, kernel)


def listed(server, token):
    response = requests.get(f"{server.url}/api/kernels", headers=auth(token), timeout=30)
    assert response.status_code == 200, response.text
    return {kernel["id"] for kernel in response.json()}


def test_laptop_lists_the_vm_kernelspec(laptop):
    response = requests.get(f"{laptop.url}/api/kernelspecs", headers=auth(laptop.token), timeout=30)
    assert response.status_code == 200, response.text
    spec = response.json()["kernelspecs"][KERNEL_NAME]["spec"]
    assert spec["language"] == "rust"
    assert spec["display_name"] == "Rust (ferrolab)"
    # The launcher's logo and the help menu's manual come from the VM through the laptop.
    logo = requests.get(f"{laptop.url}/kernelspecs/{KERNEL_NAME}/logo-64x64.png",
                        headers=auth(laptop.token), timeout=30)
    assert logo.status_code == 200 and logo.content.startswith(b"\x89PNG"), logo.status_code
    manual = requests.get(f"{laptop.url}/kernelspecs/{KERNEL_NAME}/help.html",
                          headers=auth(laptop.token), timeout=30)
    assert manual.status_code == 200 and 'id="magics"' in manual.text, manual.status_code


def test_rust_cell_runs_on_the_vm_kernel(laptop, kernel_id):
    with Channels(laptop, kernel_id) as channels:
        outcome = channels.execute("let a = 40 + 2;\na")
    assert outcome.status == "ok", outcome.content
    assert outcome.result_text() == "42"


def test_kernel_gets_only_the_environment_the_gateway_passes_on(laptop, kernel_id):
    assert NOT_PASSED not in KERNEL_ENV
    with Channels(laptop, kernel_id) as channels:
        outcome = channels.execute(
            f'(std::env::var("HOME").ok(), std::env::var("{NOT_PASSED}").ok())')
    assert outcome.result_text() == f'(Some("{os.environ["HOME"]}"), None)', outcome.content


def test_magics_run_in_the_gateway_directory(laptop, kernel_id, dirs):
    with Channels(laptop, kernel_id) as channels:
        pwd = channels.execute("%pwd")
        shell = channels.execute("!echo hi from the vm")
    # The kernel works where the gateway runs, not in the laptop server's root_dir.
    assert pwd.result_text() == f'"{dirs["vm"]}"'
    assert shell.status == "ok", shell.content
    assert shell.stream_text() == "hi from the vm\n"


def test_output_streams_before_the_cell_ends(laptop, kernel_id, dirs):
    # The cell prints three lines, then waits for a flag file that the test makes only
    # once it has seen "tick 0". Were output held back until the cell ends, the flag
    # would never come and the cell would give up after a minute, saying so.
    flag = dirs["vm"] / "release-the-cell"
    code = (
        "for i in 0..3 {\n"
        '    println!("tick {i}");\n'
        "    std::thread::sleep(std::time::Duration::from_millis(200));\n"
        "}\n"
        "let waiting = std::time::Instant::now();\n"
        f'let flag = std::path::Path::new("{flag}");\n'
        "while !flag.exists() && waiting.elapsed() < std::time::Duration::from_secs(60) {\n"
        "    std::thread::sleep(std::time::Duration::from_millis(20));\n"
        "}\n"
        'println!("{}", if flag.exists() { "released" } else { "gave up" });'
    )
    with Channels(laptop, kernel_id) as channels:
        msg_id = channels.start(code)
        outcome, seen = Outcome(reply=None), []
        deadline = time.monotonic() + TIMEOUT
        try:
            while not outcome.stream_text().startswith("tick 0"):
                message = channels.next(deadline)
                assert message is not None, f"no output within {TIMEOUT}s: {seen}"
                if message["parent_header"].get("msg_id") != msg_id:
                    continue
                seen.append(message["msg_type"])
                assert message["msg_type"] != "execute_reply", f"reply before any output: {seen}"
                if message["msg_type"] == "stream":
                    outcome.outputs.append(("stream", message["content"]))
        finally:
            flag.touch()  # also on a failure, so the cell does not hold the kernel for long
        channels.finish(msg_id, outcome=outcome, seen=seen)
    assert outcome.status == "ok", outcome.content
    assert outcome.stream_text() == "tick 0\ntick 1\ntick 2\nreleased\n"
    assert seen.index("stream") < seen.index("execute_reply")


def test_interrupt_stops_an_endless_loop(laptop, kernel_id):
    with Channels(laptop, kernel_id) as channels:
        assert channels.execute("let lost_on_interrupt = 5;").status == "ok"
        msg_id = channels.start('println!("spinning");\nloop { std::hint::spin_loop(); }')
        deadline = time.monotonic() + TIMEOUT
        while True:
            message = channels.next(deadline)
            assert message is not None, f"the loop never printed within {TIMEOUT}s"
            if message["parent_header"].get("msg_id") == msg_id and message["msg_type"] == "stream":
                break
        response = requests.post(f"{laptop.url}/api/kernels/{kernel_id}/interrupt",
                                 headers=auth(laptop.token), timeout=30)
        assert response.status_code == 204, response.text
        outcome = channels.finish(msg_id, timeout=60)
        assert outcome.status == "error"
        assert outcome.content["ename"] == "Interrupted"
        assert "lost_on_interrupt" in outcome.content["evalue"]
        assert channels.execute("6 * 7").result_text() == "42"


def test_restart_replaces_the_kernel_and_forgets_variables(laptop, gateway, kernel_id):
    with Channels(laptop, kernel_id) as channels:
        assert channels.execute("let before_restart = 1;\nbefore_restart").result_text() == "1"
    before = set(ferrolab_kernels(gateway))
    assert before, "no ferrolab process under the gateway"
    response = requests.post(f"{laptop.url}/api/kernels/{kernel_id}/restart",
                             headers=auth(laptop.token), timeout=START_TIMEOUT)
    assert response.status_code == 200, response.text
    with Channels(laptop, kernel_id) as channels:
        channels.wait_ready()
        forgotten = channels.execute("before_restart")
        assert channels.execute("2 + 2").result_text() == "4"
    assert forgotten.status == "error"
    assert forgotten.content["ename"] == "CompileError", forgotten.content
    assert "cannot find value `before_restart`" in forgotten.content["evalue"]
    after = set(ferrolab_kernels(gateway))
    assert after and not after & before, f"kernel pids before {before}, after {after}"


def test_shutdown_removes_the_kernel_from_both_servers(laptop, gateway):
    before = set(ferrolab_kernels(gateway))
    kernel = start_kernel(laptop)
    try:
        with Channels(laptop, kernel) as channels:
            channels.wait_ready()
        started = [process for pid, process in ferrolab_kernels(gateway).items() if pid not in before]
        assert len(started) == 1, f"new ferrolab kernel processes: {started}"
        processes = started + started[0].children(recursive=True)
        assert kernel in listed(laptop, laptop.token)
        assert kernel in listed(gateway, gateway.token)
        response = delete_kernel(laptop, kernel)
        assert response.status_code == 204, response.text
        assert kernel not in listed(laptop, laptop.token)
        assert kernel not in listed(gateway, gateway.token)
        gone, alive = psutil.wait_procs(processes, timeout=30)
        assert not alive, f"kernel processes still running after the shutdown: {alive}"
    finally:
        delete_kernel(laptop, kernel)


def test_gateway_refuses_a_wrong_token_and_accepts_the_right_one(gateway, kernel_id):
    specs = f"{gateway.url}/api/kernelspecs"
    for headers in ({}, auth("wrong-" + gateway.token)):
        refused = requests.get(specs, headers=headers, timeout=30)
        assert refused.status_code in (401, 403), (headers, refused.status_code, refused.text)
    assert requests.get(specs, params={"token": "wrong"}, timeout=30).status_code in (401, 403)
    accepted = requests.get(specs, headers=auth(gateway.token), timeout=30)
    assert accepted.status_code == 200, accepted.text
    assert KERNEL_NAME in accepted.json()["kernelspecs"]
    # The kernel's websocket on the gateway itself: refused with a wrong token.
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        Channels(gateway, kernel_id, token="wrong")
    assert refused.value.status_code in (401, 403)
    with Channels(gateway, kernel_id) as channels:
        assert channels.wait_ready(timeout=30)["language_info"]["name"] == "rust"
