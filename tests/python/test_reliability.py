"""Faults and load: the runtime killed with SIGKILL mid-cell, 20 restarts in a
row, two clients on one kernel, a long run of cells and 100 MB of output with the kernel's
memory watched, and output floods from shell commands and Rust loops with fast and slow
clients and interrupts (kernel memory from /proc, order of what arrives)."""

import os
import queue
import signal
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest
from jupyter_client.session import Session

from conftest import Kernel


def kernel_process(running):
    return psutil.Process(running.manager.provisioner.process.pid)


def runtime_processes(running):
    """The evcxr runtime child(ren) of the kernel (our binary with the relay)."""
    kernel = kernel_process(running)
    return [p for p in kernel.children(recursive=True)
            if p.name().startswith("ferrolab") or "ferrolab" in " ".join(p.cmdline()[:1])]


def test_sigkill_of_the_runtime_mid_cell_names_lost_variables_and_recovers():
    running = Kernel()
    try:
        assert running.execute("let kept = vec![1, 2, 3];\nkept.len()").result_text() == "3"
        msg_id = running.client.execute("std::thread::sleep(std::time::Duration::from_secs(30));")
        deadline = time.monotonic() + 30
        victims = []
        while not victims and time.monotonic() < deadline:
            victims = runtime_processes(running)
            time.sleep(0.2)
        assert victims, "no runtime process found"
        time.sleep(2)  # the cell is running user code now
        for victim in victims:
            os.kill(victim.pid, signal.SIGKILL)
        reply = running.client.get_shell_msg(timeout=60)
        assert reply["parent_header"]["msg_id"] == msg_id
        content = reply["content"]
        assert content["status"] == "error" and content["ename"] == "RuntimeCrashed"
        assert "kept" in content["evalue"] and "SIGKILL" in "\n".join(content["traceback"])
        assert running.execute("40 + 2").result_text() == "42"
    finally:
        running.shutdown()


def session_dirs():
    root = Path(tempfile.gettempdir()) / f"ferrolab-{os.getuid()}"
    return {p.name for p in root.iterdir() if not p.name.startswith(".")} if root.exists() else set()


def test_twenty_restarts_in_a_row_leave_one_working_kernel():
    running = Kernel()
    try:
        assert running.execute("1 + 1").result_text() == "2"
        for _ in range(20):
            running.manager.restart_kernel(now=False)
            running.client.wait_for_ready(timeout=60)
        assert running.execute("let after = 20;\nafter + 1").result_text() == "21"
        mine = {d for d in session_dirs() if d.startswith(f"{running.manager.provisioner.process.pid}-")}
        assert len(mine) == 1, f"one session directory for the live kernel, found {mine}"
        kernel = kernel_process(running)
        assert len(runtime_processes(running)) <= 2, [p.cmdline() for p in kernel.children(recursive=True)]
    finally:
        running.shutdown()


def test_two_clients_on_one_kernel_both_see_iopub():
    running = Kernel()
    # Its own session (and so its own ZeroMQ identity), like a second frontend.
    other = running.manager.client(session=Session(key=running.manager.session.key))
    other.start_channels()
    try:
        other.wait_for_ready(timeout=60)
        msg_id = running.client.execute('println!("seen by both");')
        texts = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                message = other.get_iopub_msg(timeout=1)
            except queue.Empty:
                continue
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "stream":
                texts.append(message["content"]["text"])
            if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                break
        assert "".join(texts) == "seen by both\n"
        running.client.get_shell_msg(timeout=60)
    finally:
        other.stop_channels()
        running.shutdown()


def test_a_thousand_cells_keep_the_kernel_memory_flat():
    running = Kernel()
    try:
        kernel = kernel_process(running)
        # Warm up: the engine (evcxr and rust-analyzer, ~300 MiB) loads behind
        # the first Rust cell.
        assert running.execute("let mut total = 0u64;\ntotal").result_text() == "0"
        for i in range(50):
            running.execute("%pwd\n!true")
        before = kernel.memory_info().rss
        for i in range(1000):
            if i % 50 == 0:
                # A Rust cell now and then (each is a compile, ~0.3 s).
                assert running.execute(f"total += {i};\ntotal").status == "ok"
                continue
            outcome = running.execute(f"%pwd\n!echo {i}")
            assert outcome.stream_text().strip().endswith(str(i))
        after = kernel.memory_info().rss
        growth = (after - before) / 2**20
        print(f"1000 cells: kernel RSS {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB")
        # History holds the 1000 cells (a few hundred KB); anything near 50 MiB is a leak.
        assert growth < 50, f"kernel grew by {growth:.1f} MiB over 1000 cells"
    finally:
        running.shutdown()


def test_a_hundred_megabytes_of_output_arrive_whole_with_bounded_memory():
    running = Kernel()
    try:
        kernel = kernel_process(running)
        assert running.execute('let line = "x".repeat(99);\nline.len()').result_text() == "99"
        before = kernel.memory_info().rss
        client = running.client
        msg_id = client.execute("for _ in 0..1_000_000 { println!(\"{line}\"); }")
        received = messages = 0
        peak = before
        answered_meanwhile = False
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            message = client.get_iopub_msg(timeout=60)
            peak = max(peak, kernel.memory_info().rss)
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "stream":
                received += len(message["content"]["text"])
                messages += 1
                if messages == 5:
                    # The kernel answers on control while the flood runs.
                    client.control_channel.send(
                        client.session.msg("kernel_info_request", {}))
                    answered_meanwhile = client.get_control_msg(timeout=30)["msg_type"] == "kernel_info_reply"
            if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                break
        growth = (peak - before) / 2**20
        print(f"100 MB of output: {received} chars in {messages} messages; kernel RSS "
              f"{before / 2**20:.0f} MiB, peak +{growth:.0f} MiB")
        assert received == 100 * 1_000_000
        assert answered_meanwhile
        assert growth < 200, f"the kernel held {growth:.0f} MiB more while streaming"
        assert running.execute("line.len() + 1").result_text() == "100"
    finally:
        running.shutdown()


def test_a_client_that_disconnects_mid_cell_and_reconnects_sees_the_cell_go_on():
    running = Kernel()
    try:
        assert running.execute("1").result_text() == "1"
        msg_id = running.client.execute(
            "for i in 0..40 { println!(\"tick {i}\"); "
            "std::thread::sleep(std::time::Duration::from_millis(200)); }")
        time.sleep(2)
        running.client.stop_channels()  # the laptop goes to sleep
        time.sleep(1)
        again = running.manager.client(session=Session(key=running.manager.session.key))
        again.start_channels()
        texts = []
        finished = False
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not finished:
            try:
                message = again.get_iopub_msg(timeout=1)
            except queue.Empty:
                continue
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "stream":
                texts.append(message["content"]["text"])
            finished = (message["msg_type"] == "status"
                        and message["content"]["execution_state"] == "idle")
        seen = "".join(texts)
        assert finished, "the reconnected client never saw the cell finish"
        assert "tick 39" in seen and "tick 0\n" not in seen, seen
        again.stop_channels()
        running.client = running.manager.client()
        running.client.start_channels()
        running.client.wait_for_ready(timeout=60)
        assert running.execute("2 + 2").result_text() == "4"
    finally:
        running.shutdown()


def test_running_out_of_memory_in_a_cell_loses_the_runtime_not_the_kernel():
    running = Kernel()
    try:
        assert running.execute("let before = 7u8;\nbefore").result_text() == "7"
        runtime = runtime_processes(running)
        assert runtime, "no runtime process found"
        for process in runtime:
            # A memory limit on the runtime only: what it maps now plus 256 MiB.
            limit = process.memory_info().vms + (256 << 20)
            process.rlimit(psutil.RLIMIT_AS, (limit, limit))
        kernel_before = kernel_process(running).memory_info().rss
        crashed = running.execute(
            "let mut hog: Vec<Vec<u8>> = Vec::new();\n"
            "loop { hog.push(vec![1u8; 64 << 20]); }", timeout=120)
        error = crashed.error()
        assert error is not None and error["ename"] == "RuntimeCrashed", error
        assert "before" in error["evalue"], "the error names the lost variable"
        shown = crashed.stream_text("stderr") + "\n".join(error["traceback"])
        assert "memory allocation of 67108864 bytes failed" in shown, shown
        assert kernel_process(running).is_running()
        growth = (kernel_process(running).memory_info().rss - kernel_before) / 2**20
        assert growth < 100, f"the kernel itself grew by {growth:.0f} MiB"
        assert running.execute("40 + 2").result_text() == "42"
    finally:
        running.shutdown()


def test_a_full_disk_under_the_history_file_loses_no_cell(tmp_path):
    import subprocess

    import pytest

    mount = tmp_path / "tiny"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({result.stderr.strip()}); run as root")
    log_file = tmp_path / "kernel.log"
    try:
        history = mount / "history.jsonl"
        running = Kernel(env={"FERROLAB_HISTORY_FILE": str(history),
                              "FERROLAB_LOG_FILE": str(log_file), "FERROLAB_LOG": "warn"})
        try:
            # Fill the file system to the last byte.
            fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
            try:
                while True:
                    os.write(fd, b"x" * 512)
            except OSError:
                pass
            finally:
                os.close(fd)
            for i in range(5):
                assert running.execute(f"!echo cell-{i}").stream_text() == f"cell-{i}\n"
            running.client.history(hist_access_type="tail", n=10)
            reply = running.client.get_shell_msg(timeout=30)
            inputs = [entry[2] for entry in reply["content"]["history"]]
            assert [f"!echo cell-{i}" for i in range(5)] == [x for x in inputs if x.startswith("!echo cell-")]
            log = log_file.read_text()
            assert log.count("history: cannot write") == 1, log
            assert "No space left on device" in log
        finally:
            running.shutdown()
    finally:
        subprocess.run(["umount", str(mount)], check=False)


# Output floods. The guarantee under test: however fast a cell writes, the
# kernel holds a bounded amount of it (the producer is slowed to what the
# client takes), what arrives is in order, and an interrupt is answered.
FLOOD_RSS_LIMIT_MIB = 256


class PeakRss:
    """The highest RSS of a process, sampled from /proc every 10 ms in a thread."""

    def __init__(self, process):
        self.process = process
        self.start = process.memory_info().rss
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(0.01)

    def growth_mib(self):
        self._stop.set()
        self._thread.join()
        return (self.peak - self.start) / 2**20


@pytest.fixture(scope="module")
def flood_kernel():
    running = Kernel()
    # The engine (evcxr, rust-analyzer) loads behind the first Rust cell; count from after it.
    assert running.execute("let warm = 1;\nwarm").result_text() == "1"
    yield running
    running.shutdown()


def run_flood(running, code, slow_seconds=0.0, timeout=300):
    """Runs `code`, reading IOPub one message per 5 ms for `slow_seconds` (a slow
    frontend), then as fast as possible. Returns (reply, stream text, peak RSS growth)."""
    client = running.client
    rss = PeakRss(kernel_process(running))
    msg_id = client.execute(code)
    start = time.monotonic()
    texts = []
    reply = None
    idle = False
    while not (idle and reply is not None):
        assert time.monotonic() - start < timeout, f"{code!r} did not finish within {timeout}s"
        if reply is None and client.shell_channel.msg_ready():
            message = client.get_shell_msg(timeout=1)
            if message["parent_header"].get("msg_id") == msg_id:
                reply = message
        try:
            message = client.get_iopub_msg(timeout=0.05)
        except queue.Empty:
            continue
        if time.monotonic() - start < slow_seconds:
            time.sleep(0.005)
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        if message["msg_type"] == "stream" and message["content"]["name"] == "stdout":
            texts.append(message["content"]["text"])
        idle = message["msg_type"] == "status" and message["content"]["execution_state"] == "idle"
    return reply, "".join(texts), rss.growth_mib()


def test_a_shell_flood_to_a_slow_client_keeps_the_kernel_memory_bounded(flood_kernel):
    reply, text, growth = run_flood(flood_kernel, "!timeout 4 yes", slow_seconds=6)
    print(f"!timeout 4 yes, slow client: {len(text) / 1e6:.1f} MB delivered, kernel peak +{growth:.0f} MiB")
    assert reply["content"]["status"] == "ok"
    assert text and set(text) == {"y", "\n"}
    assert growth < FLOOD_RSS_LIMIT_MIB, f"the kernel grew {growth:.0f} MiB under the flood"
    assert flood_kernel.execute("!echo after").stream_text() == "after\n"


def test_a_shell_flood_arrives_whole_and_in_order_with_bounded_memory(flood_kernel):
    reply, text, growth = run_flood(flood_kernel, "!seq 1 5000000")
    print(f"!seq 1 5000000: {len(text) / 1e6:.1f} MB delivered, kernel peak +{growth:.0f} MiB")
    assert reply["content"]["status"] == "ok"
    assert text == "".join(f"{i}\n" for i in range(1, 5_000_001)), "lines lost or out of order"
    assert growth < FLOOD_RSS_LIMIT_MIB, f"the kernel grew {growth:.0f} MiB under the flood"


def test_a_rust_print_flood_to_a_slow_client_stays_in_order_with_bounded_memory(flood_kernel):
    code = "for i in 0..3_000_000u32 { println!(\"{i}\"); }"
    reply, text, growth = run_flood(flood_kernel, code, slow_seconds=4)
    numbers = [int(line) for line in text.splitlines()]
    print(f"Rust println flood, slow client: {len(numbers)} of 3000000 lines, kernel peak +{growth:.0f} MiB")
    assert reply["content"]["status"] == "ok"
    assert numbers and numbers == sorted(set(numbers)), "lines out of order or repeated"
    assert numbers[-1] == 2_999_999
    assert growth < FLOOD_RSS_LIMIT_MIB, f"the kernel grew {growth:.0f} MiB under the flood"


def interrupt_under_flood(running, code):
    """Starts `code`, lets it flood for a second, interrupts as the frontend does,
    and returns (seconds until the execute_reply, the reply, peak RSS growth)."""
    client = running.client
    rss = PeakRss(kernel_process(running))
    msg_id = client.execute(code)
    streaming_since = None
    while streaming_since is None or time.monotonic() - streaming_since < 1.0:
        message = client.get_iopub_msg(timeout=120)
        if message["parent_header"].get("msg_id") == msg_id and message["msg_type"] == "stream":
            streaming_since = streaming_since or time.monotonic()
    interrupted = time.monotonic()
    running.manager.interrupt_kernel()
    reply = answered = None
    idle = False
    # A liveness bound, not a timing goal (`./kernel bench` reports the time).
    while not (reply and idle) and time.monotonic() - interrupted < 60:
        if reply is None and client.shell_channel.msg_ready():
            message = client.get_shell_msg(timeout=1)
            if message["parent_header"].get("msg_id") == msg_id:
                reply, answered = message, time.monotonic() - interrupted
        if client.iopub_channel.msg_ready():
            message = client.get_iopub_msg(timeout=1)
            idle = idle or (message["parent_header"].get("msg_id") == msg_id
                            and message["msg_type"] == "status"
                            and message["content"]["execution_state"] == "idle")
        else:
            time.sleep(0.001)
    return answered, reply, rss.growth_mib()


def test_an_interrupt_under_a_flood_is_answered_and_the_kernel_goes_on(flood_kernel):
    answered, reply, growth = interrupt_under_flood(flood_kernel, "!yes")
    print(f"interrupt of !yes answered after {answered:.2f} s; kernel peak +{growth:.0f} MiB")
    assert reply is not None, "no execute_reply after interrupting !yes"
    assert growth < FLOOD_RSS_LIMIT_MIB
    answered, reply, growth = interrupt_under_flood(flood_kernel, "loop { println!(\"y\"); }")
    print(f"interrupt of a println loop answered after {answered:.2f} s; kernel peak +{growth:.0f} MiB")
    assert reply is not None, "no execute_reply after interrupting a println loop"
    assert reply["content"]["status"] == "error"
    assert growth < FLOOD_RSS_LIMIT_MIB
    assert flood_kernel.execute("!echo still fine").stream_text() == "still fine\n"


# Every way a kernel ends takes the process groups it started with it. The
# processes are found in /proc while the kernel lives; afterwards the test polls
# /proc until they are gone (each check has a deadline, nothing is timed).

def alive(pid):
    """True while `pid` exists and is not a zombie (orphans may wait for init)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


def descendants_of(running):
    """pid -> command line of every process the kernel started: its session
    (Jupyter starts each kernel in a session of its own), which keeps orphans
    such as a shell command's background process."""
    kernel = kernel_process(running).pid
    found = {}
    for process in psutil.process_iter(["cmdline"]):
        try:
            if process.pid != kernel and os.getsid(process.pid) == kernel:
                found[process.pid] = " ".join(process.info["cmdline"] or [])
        except (OSError, psutil.Error):
            pass
    return found


def wait_for(condition, what, seconds=60):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def wait_for_descendant(running, fragment):
    """The pid of a process the kernel started whose command line has `fragment`."""
    found = []

    def appeared():
        found[:] = [pid for pid, line in descendants_of(running).items() if fragment in line]
        return found

    wait_for(appeared, f"a process running {fragment!r}", seconds=180)
    return found[0]


def assert_all_end(pids, after):
    def survivors():
        return {pid: line for pid, line in pids.items() if alive(pid)}

    deadline = time.monotonic() + 30
    while survivors():
        assert time.monotonic() < deadline, f"still running after {after}: {survivors()}"
        time.sleep(0.05)


def heavy_build(salt, statements=300):
    """Rust code whose build takes far longer than any deadline here."""
    chains = "\n".join(
        f"let _h{i} = (0..{i + salt}u64).map(|x| x.wrapping_mul({i * 7 + salt}))"
        f".filter(|x| x % 3 == 0).map(|x| format!(\"{{x}}\")).collect::<Vec<String>>().len();"
        for i in range(statements))
    return "{\n" + chains + "\n}"


def test_shutdown_request_ends_a_background_command_that_ignores_sigterm():
    running = Kernel()
    process = running.manager.provisioner.process
    # Left running in the background (its shell has exited: an orphan), deaf to
    # SIGINT and SIGTERM.
    assert running.execute("!(trap '' INT TERM; exec sleep 996) &").status == "ok"
    sleeper = wait_for_descendant(running, "sleep 996")
    family = descendants_of(running)
    running.client.shutdown()
    started = time.monotonic()
    process.wait(timeout=60)
    print(f"kernel exited {time.monotonic() - started:.2f}s after the shutdown_request; "
          f"the command then {'still ran' if alive(sleeper) else 'had ended'}")
    running.client.stop_channels()
    running.manager.cleanup_resources()
    assert_all_end(family, "a shutdown_request")


def test_shutdown_kernel_now_ends_a_running_shell_command():
    running = Kernel()
    running.client.execute("!sleep 998")
    wait_for_descendant(running, "sleep 998")
    family = descendants_of(running)
    running.manager.shutdown_kernel(now=True)
    running.client.stop_channels()
    assert_all_end(family, "shutdown_kernel(now=True)")


def kernel_mid_build(salt):
    """A kernel with a background shell process and a long Rust build running."""
    running = Kernel()
    assert running.execute("let warm = 1;").status == "ok"
    running.client.execute(f"!sleep 995 &\n{heavy_build(salt)}")
    wait_for_descendant(running, "sleep 995")
    wait_for_descendant(running, "rustc --crate-name ctx")
    family = descendants_of(running)
    assert any("cargo" in line for line in family.values()), family
    return running, family


def test_sigterm_mid_build_ends_cargo_rustc_the_runtime_and_shell_groups():
    running, family = kernel_mid_build(1)
    process = running.manager.provisioner.process
    os.kill(process.pid, signal.SIGTERM)
    process.wait(timeout=60)
    running.client.stop_channels()
    running.manager.cleanup_resources()
    assert_all_end(family, "SIGTERM to the kernel")


def test_sigkill_of_the_kernel_alone_mid_build_ends_everything_it_started():
    running, family = kernel_mid_build(2)
    process = running.manager.provisioner.process
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    running.client.stop_channels()
    running.manager.cleanup_resources()
    assert_all_end(family, "SIGKILL to the kernel process alone")
