"""The warm spare kernel: a restart, or the next notebook, adopts a kernel whose
engine already started.

`./kernel test` turns spares off for every other test (FERROLAB_SPARE=0: hundreds of
kernels with differing environments would each start one); these tests turn them on
in their own environment, with their own spare directory, and end their spares.

What is checked is behaviour, never time: which process serves the kernel (the shell
command's parent), where it runs, what it sees, and that nothing outlives a killed
launcher.
"""

import json
import os
import subprocess
import threading
import time

import psutil
import pytest
from jupyter_client.kernelspec import KernelSpecManager

from conftest import KERNEL_NAME, Kernel

WAIT = 300


def ferrolab_binary():
    return KernelSpecManager().get_kernel_spec(KERNEL_NAME).argv[0]


@pytest.fixture
def spare_env(tmp_path):
    """Spares on, in a private directory of this test; every spare ended after it."""
    spare_dir = tmp_path / "spares"
    env = {
        **os.environ,
        "FERROLAB_SPARE": "1",
        "FERROLAB_SPARE_DIR": str(spare_dir),
        "FERROLAB_SPARE_MIN_FREE_MB": "0",
        "FERROLAB_SPARE_IDLE_MINUTES": "20",
    }
    yield env
    subprocess.run([ferrolab_binary(), "spare", "stop"], env=env, capture_output=True, timeout=60)
    for process in psutil.process_iter(["cmdline", "environ"]):
        try:
            if "serve" in (process.info["cmdline"] or []) and (
                    (process.info["environ"] or {}).get("FERROLAB_SPARE_DIR") == str(spare_dir)):
                process.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def spare(env):
    """The spare's status (`ferrolab spare status --json`), or None."""
    done = subprocess.run([ferrolab_binary(), "spare", "status", "--json"], env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)["spare"]


def warm_spare(env, other_than=None, loaded=None):
    """Waits until a warm spare (not pid `other_than`, with the `:dep` line
    `loaded` built and loaded when given) answers; its status."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        found = spare(env)
        if (found and found["ready"] and found["pid"] != other_than
                and (loaded is None or loaded in found["loaded"])):
            return found
        time.sleep(0.2)
    pytest.fail(f"no such warm spare within {WAIT}s (last status: {spare(env)})")


def start_spare(env, cwd):
    subprocess.run([ferrolab_binary(), "spare", "start"], env=env, cwd=cwd, check=True, timeout=60)
    return warm_spare(env)


def kernel_process(kernel):
    """The pid of the process that serves the kernel: the parent of its shell commands."""
    outcome = kernel.execute("!echo $PPID")
    assert outcome.status == "ok", outcome.error()
    return int(outcome.stream_text().strip())


def launcher_pid(kernel):
    return kernel.manager.provisioner.process.pid


def value(kernel, code):
    outcome = kernel.execute(code)
    assert outcome.status == "ok", outcome.error()
    return outcome.result_text()


def test_a_kernel_adopts_the_warm_spare_in_its_own_directory_and_restarts_into_the_next(
        spare_env, tmp_path):
    elsewhere = tmp_path / "spare-started-here"
    notebook_dir = tmp_path / "notebook dir"
    elsewhere.mkdir()
    notebook_dir.mkdir()
    first = start_spare(spare_env, elsewhere)

    kernel = Kernel(env={**spare_env, "JPY_SESSION_NAME": "b.ipynb"}, cwd=notebook_dir)
    try:
        # The spare serves it; the launcher Jupyter started only passes it on.
        assert kernel_process(kernel) == first["pid"] != launcher_pid(kernel)
        assert value(kernel, "let x = 20; x * 2 + 2") == "42"
        # It runs where this launch runs, with this launch's per-kernel variables:
        # the kernel, its shell commands and its Rust runtime alike.
        assert kernel.execute("%pwd").result_text().strip("'\"") == str(notebook_dir)
        assert value(kernel, "std::env::current_dir().unwrap().display().to_string()") == \
            json.dumps(str(notebook_dir))
        assert value(kernel, 'std::env::var("JPY_SESSION_NAME").unwrap()') == '"b.ipynb"'
        assert kernel.execute("!echo $JPY_SESSION_NAME").stream_text().strip() == "b.ipynb"
        assert open(os.path.join(notebook_dir, "probe.txt"), "w").write("here") == 4
        assert value(kernel, 'std::fs::read_to_string("probe.txt").unwrap()') == '"here"'

        # An interrupt (message mode) reaches it.
        kernel.client.execute("std::thread::sleep(std::time::Duration::from_secs(600));")
        while kernel.client.get_iopub_msg(timeout=WAIT)["content"].get("execution_state") != "busy":
            pass
        kernel.manager.interrupt_kernel()
        reply = kernel.client.get_shell_msg(timeout=WAIT)
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "Interrupted"

        # Once idle, the kernel starts the next spare; a restart adopts it.
        second = warm_spare(spare_env, other_than=first["pid"])
        kernel.manager.restart_kernel(now=False)
        kernel.client.wait_for_ready(timeout=WAIT)
        assert kernel_process(kernel) == second["pid"]
        assert kernel.execute("%pwd").result_text().strip("'\"") == str(notebook_dir)
        assert kernel.execute("x").error()["ename"] == "CompileError"

        # Killing the launcher (what a forced shutdown does) ends the kernel and
        # everything it started.
        adopted = psutil.Process(second["pid"])
        family = [adopted] + adopted.children(recursive=True)
        assert len(family) > 1  # the Rust runtime at least
        kernel.client.stop_channels()
        kernel.manager.shutdown_kernel(now=True)
        gone, alive = psutil.wait_procs(family, timeout=30)
        assert not alive, f"left running after the launcher was killed: {alive}"
    finally:
        if kernel.manager.has_kernel:
            kernel.shutdown()


def test_a_launch_with_another_environment_starts_its_own_kernel_and_leaves_the_spare(
        spare_env, tmp_path):
    waiting = start_spare(spare_env, tmp_path)
    kernel = Kernel(env={**spare_env, "FERROLAB_SPARE_TEST_OTHER": "1"}, cwd=tmp_path)
    try:
        assert kernel_process(kernel) == launcher_pid(kernel)
        assert value(kernel, "1 + 1") == "2"
        assert spare(spare_env)["pid"] == waiting["pid"]
        launcher = kernel.manager.provisioner.process
        kernel.shutdown()
        # A clean shutdown: the launcher reports the kernel's own status.
        assert launcher.wait(timeout=60) == 0
    finally:
        if kernel.manager.has_kernel:
            kernel.shutdown()


def ended(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_clean_shutdown_of_an_adopted_kernel_exits_the_launcher_with_its_status(
        spare_env, tmp_path):
    waiting = start_spare(spare_env, tmp_path)
    kernel = Kernel(env=spare_env, cwd=tmp_path)
    try:
        assert kernel_process(kernel) == waiting["pid"]
        launcher = kernel.manager.provisioner.process
        kernel.shutdown()
        assert launcher.wait(timeout=60) == 0
        deadline = time.monotonic() + 30
        while not ended(waiting["pid"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ended(waiting["pid"])
    finally:
        if kernel.manager.has_kernel:
            kernel.shutdown()


def test_two_launches_at_once_one_adopts_the_spare_and_the_other_starts_its_own(spare_env, tmp_path):
    """Two notebooks opened together (JupyterLab restoring a workspace): one gets
    the spare, the other starts cold; both work."""
    waiting = start_spare(spare_env, tmp_path)
    kernels, errors = [], []

    def launch():
        try:
            kernels.append(Kernel(env=spare_env, cwd=tmp_path))
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=launch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert not errors, errors
        assert [value(kernel, "1 + 1") for kernel in kernels] == ["2", "2"]
        served_by = sorted(kernel_process(kernel) == waiting["pid"] for kernel in kernels)
        assert served_by == [False, True]
        for kernel in kernels:
            if kernel_process(kernel) != waiting["pid"]:
                assert kernel_process(kernel) == launcher_pid(kernel)
    finally:
        for kernel in kernels:
            kernel.shutdown()


ITOA = ':dep itoa = "1"'


def test_a_restart_finds_the_notebooks_crates_built_and_loaded(spare_env, tmp_path):
    """The spare a notebook's kernel starts builds and loads the crates that notebook
    added with `:dep`: after a restart they are in the session before any cell names
    them, and the notebook's own `:dep` line compiles nothing. Another notebook that
    adopts such a spare gets a session without them."""
    notebook = {**spare_env, "JPY_SESSION_NAME": str(tmp_path / "a.ipynb")}
    kernel = Kernel(env=notebook, cwd=tmp_path)
    try:
        added = kernel.execute(f"{ITOA}\nitoa::Buffer::new().format(7).len()")
        assert added.status == "ok", added.outputs
        loaded = warm_spare(spare_env, loaded=ITOA)
        assert ITOA in subprocess.run([ferrolab_binary(), "spare", "status"], env=spare_env,
                                      capture_output=True, text=True, check=True).stdout

        kernel.manager.restart_kernel(now=False)
        kernel.client.wait_for_ready(timeout=WAIT)
        assert kernel_process(kernel) == loaded["pid"]
        # No `:dep` line in this cell: the crate is already there.
        assert value(kernel, "itoa::Buffer::new().format(2026).to_string()") == '"2026"'
        rerun = kernel.execute(f"{ITOA}\nitoa::Buffer::new().format(5).len()")
        assert rerun.status == "ok" and rerun.result_text() == "1", rerun.outputs
        assert "Compiling itoa" not in rerun.stream_text("stderr")
        # The restarted kernel's own spare loads them as well.
        following = warm_spare(spare_env, other_than=loaded["pid"], loaded=ITOA)
    finally:
        kernel.shutdown()

    other = Kernel(env={**spare_env, "JPY_SESSION_NAME": str(tmp_path / "b.ipynb")}, cwd=tmp_path)
    try:
        assert kernel_process(other) == following["pid"]
        missing = other.execute("itoa::Buffer::new().format(1).len()")
        assert missing.status == "error" and "itoa" in missing.error()["evalue"], missing.outputs
        assert value(other, "let y = 40; y + 2") == "42"
    finally:
        other.shutdown()
