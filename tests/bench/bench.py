"""`./kernel bench`: ferrolab side by side with evcxr_jupyter and ipykernel.

Each kernel is started by its kernelspec through jupyter_client, as a frontend
does. Rounds alternate the kernels so that drift of the machine hits all of them
alike; every figure is the median over rounds (with min–max), and every row shows
ferrolab ÷ peer from this same run. Benchmarks print figures; nothing here
asserts a time.

Usage: bench.py [--rounds N] [--json FILE] [--kernels ferrolab,evcxr,python3]
                [--evcxr-binary PATH] [--ferrolab-before PATH]
                [--dep-rounds N] [--dep SPEC]

Besides the first cell sent at ready (Run All on a fresh kernel), two rows time
a restart (`restart → first result`) and a person who reads for 15 s before
running a first cell that defines a variable, then a second one.

The `:dep` rows build a crate in a first and then a second kernel, each pair
with fresh cache directories: ferrolab (its build cache on, as shipped),
evcxr_jupyter as shipped, and evcxr_jupyter with its own `:cache 2000` typed
first; and ferrolab once more after `ferrolab prebuild` filled the fresh cache
with ferrolab's own crates (what `./kernel lab` starts in the background), so
that row shows a user's first `:dep` on a machine where ferrolab was set up;
and ferrolab in a fresh cache whose `:dep` comes once the kernel's own idle
warm-up has put those crates in the cache (a user who reads a few seconds
first; the plain ferrolab row sends its `:dep` at once, before any warm-up).
`--dep-rounds 0` skips them.

The main rows run ferrolab with FERROLAB_SPARE=0: a kernel with no warm spare to
adopt, the first on a machine. The spare rows then time ferrolab as shipped: a kernel
start that adopts a warm spare, and a restart that adopts the next one (`--no-spare`
skips them), beside evcxr_jupyter's start and restart.

The `%checkpoint` rows (ferrolab only; `--no-checkpoint` skips them) save a
268 MB `Vec<f32>` a second time (the first save adds the checkpoint runtime from
a prebuilt cache) and restore it: fsynced writes, so the disk is in the figure.

`--ferrolab-before PATH` adds another ferrolab build (e.g. one of `main`) as a
column, so a change is measured before and after in the same alternating run.

`--soak MINUTES` instead runs one ferrolab kernel for that long through a mix of
Rust cells, magics, shell commands, output floods (fast and slow client) and
interrupts, and prints the kernel's RSS over time: it should stay flat.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date

import jupyter_client
from jupyter_client.kernelspec import KernelSpecManager

# The same work in each language. `None`: the kernel has no equivalent.
RUST = {
    "first": "1 + 1",
    "first let": "let a = 40 + 2; a",
    "define": "let a = 41;",
    "warm a + 1": "a + 1",
    "warm vec + len": "let v = vec![1, 2, 3]; v.len()",
    "warm fn + call": "fn double(x: i32) -> i32 { x * 2 }\ndouble(a)",
    "print 2000 lines": 'for i in 0..2000 { println!("line {i}"); }',
    "!pwd": "!pwd",
    "%pwd": "%pwd",
}
PYTHON = {
    "first": "1 + 1",
    "first let": "a = 40 + 2; a",
    "define": "a = 41",
    "warm a + 1": "a + 1",
    "warm vec + len": "v = [1, 2, 3]; len(v)",
    "warm fn + call": "def double(x):\n    return x * 2\ndouble(a)",
    "print 2000 lines": 'for i in range(2000):\n    print(f"line {i}")',
    "!pwd": "!pwd",
    "%pwd": "%pwd",
}
# Output floods: a shell command and a print loop that write as fast as they can.
RUST_FLOOD = {
    "!yes": "!timeout 3 yes",
    "print loop": 'let line = "x".repeat(99);\nfor _ in 0..1_000_000 { println!("{line}"); }',
    "endless print": 'loop { println!("y"); }',
}
PYTHON_FLOOD = {
    "!yes": "!timeout 3 yes",
    "print loop": 'line = "x" * 99\nfor _ in range(1_000_000):\n    print(line)',
    "endless print": 'while True:\n    print("y")',
}
FLOOD = {"ferrolab": RUST_FLOOD, "evcxr": {**RUST_FLOOD, "!yes": None}, "python3": PYTHON_FLOOD}
CODE = {"ferrolab": RUST, "evcxr": {**RUST, "%pwd": None}, "python3": PYTHON}
LABEL = {"ferrolab": "ferrolab", "evcxr": "evcxr_jupyter", "python3": "ipykernel",
         "ferrolab-before": "ferrolab before"}
CODE["ferrolab-before"] = RUST
FLOOD["ferrolab-before"] = RUST_FLOOD
WARM_REPEATS = 5
# How long the "person reading" rows wait between ready and the first cell.
READING_PAUSE = 15
MAGIC_REPEATS = 50
MEMORY_CELLS = 200


def execute(client, code, timeout=600, stream_start=None):
    """Seconds until the reply and idle, and the number of stream messages.
    `stream_start` (a list) receives the seconds until the first stream message."""
    msg_id = client.execute(code)
    start = time.perf_counter()
    streams = 0
    while True:
        message = client.get_iopub_msg(timeout=timeout)
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        if message["msg_type"] == "stream":
            if streams == 0 and stream_start is not None:
                stream_start.append(time.perf_counter() - start)
            streams += 1
        if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            break
    reply = client.get_shell_msg(timeout=timeout)
    elapsed = time.perf_counter() - start
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"{code!r} failed: {reply['content'].get('evalue')}")
    return elapsed, streams


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakRss:
    """Samples a process's RSS every 10 ms in a thread; `.peak` in KiB."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = rss_kib(pid) or 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid) or 0)
            self._stop.wait(0.01)

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.peak


def flood(client, pid, code, slow_seconds=0.0, timeout=600):
    """Runs an output flood; returns (MB/s of stream text delivered between the
    first and the last stream message, peak kernel RSS above the start in MiB).
    With `slow_seconds`, the client first reads one message per 10 ms for that
    long (a slow frontend), then as fast as it can."""
    before = rss_kib(pid) or 0
    sampler = PeakRss(pid)
    msg_id = client.execute(code)
    start = time.perf_counter()
    received = 0
    first = last = None
    replied = idle = False
    quiet_since = None
    # Done at the reply plus idle, or plus 5 s without IOPub traffic: a kernel
    # whose IOPub drops messages under load (a PUB socket at its high-water
    # mark) may never deliver the idle.
    while not (replied and (idle or time.perf_counter() - quiet_since > 5)):
        if time.perf_counter() - start > timeout:
            raise RuntimeError(f"{code!r} did not finish within {timeout}s")
        if not replied and client.shell_channel.msg_ready():
            if client.get_shell_msg(timeout=timeout)["parent_header"].get("msg_id") == msg_id:
                replied, quiet_since = True, time.perf_counter()
        if not client.iopub_channel.msg_ready():
            time.sleep(0.0005)
            continue
        message = client.get_iopub_msg(timeout=timeout)
        quiet_since = time.perf_counter()
        if slow_seconds and time.perf_counter() - start < slow_seconds:
            time.sleep(0.01)
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        if message["msg_type"] == "stream":
            received += len(message["content"]["text"].encode())
            first = first or time.perf_counter()
            last = time.perf_counter()
        if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            idle = True
    end = last or time.perf_counter()
    peak = sampler.stop()
    rate = received / 1e6 / (end - first) if first and end > first else 0.0
    return rate, max(0, peak - before) / 1024


def interrupt_latency(manager, client, code, timeout=120):
    """Seconds from an interrupt (as the frontend sends it) to the execute_reply
    of a cell that floods output; the client keeps reading IOPub meanwhile."""
    msg_id = client.execute(code)
    streaming_since = None
    while streaming_since is None or time.perf_counter() - streaming_since < 1.0:
        message = client.get_iopub_msg(timeout=timeout)
        if message["parent_header"].get("msg_id") == msg_id and message["msg_type"] == "stream":
            streaming_since = streaming_since or time.perf_counter()
    start = time.perf_counter()
    manager.interrupt_kernel()
    answered = None
    idle = False
    quiet_since = time.perf_counter()
    # Then drain to idle (or 5 s of quiet: see `flood`) so the next cell starts clean.
    while answered is None or not (idle or time.perf_counter() - quiet_since > 5):
        if time.perf_counter() - start > timeout:
            raise RuntimeError(f"no reply to the interrupt of {code!r} within {timeout}s")
        if answered is None and client.shell_channel.msg_ready():
            reply = client.get_shell_msg(timeout=timeout)
            if reply["parent_header"].get("msg_id") == msg_id:
                answered = time.perf_counter() - start
        if client.iopub_channel.msg_ready():
            message = client.get_iopub_msg(timeout=timeout)
            quiet_since = time.perf_counter()
            if (message["parent_header"].get("msg_id") == msg_id and message["msg_type"] == "status"
                    and message["content"]["execution_state"] == "idle"):
                idle = True
        else:
            time.sleep(0.0005)
    return answered


def kernel_info_rate(client, count=500, patience=60):
    """kernel_info requests answered per second when `count` are sent at once
    (each also publishes busy and idle, which the client reads as they come).
    A kernel that drops some (ipykernel once did, here) is rated by the replies
    that came within `patience` seconds, and the shortfall is printed."""
    start = time.perf_counter()
    wanted = {client.kernel_info() for _ in range(count)}
    while wanted and time.perf_counter() - start < patience:
        while client.iopub_channel.msg_ready():
            client.get_iopub_msg(timeout=30)
        if client.shell_channel.msg_ready():
            wanted.discard(client.get_shell_msg(timeout=30)["parent_header"].get("msg_id"))
        else:
            time.sleep(0.0002)
    if wanted:
        print(f"  note: {len(wanted)} of {count} kernel_info requests got no reply within {patience} s")
    return (count - len(wanted)) / (time.perf_counter() - start)


def one_round(name, with_memory):
    code = CODE[name]
    figures = {}
    start = time.perf_counter()
    manager, client = jupyter_client.manager.start_new_kernel(kernel_name=name, startup_timeout=300)
    figures["start → ready"] = time.perf_counter() - start
    info = []
    for _ in range(200):
        t = time.perf_counter()
        client.kernel_info(reply=True, timeout=30)
        info.append(time.perf_counter() - t)
    figures["kernel_info round trip (median of 200)"] = statistics.median(info)
    figures["kernel_info requests/s (500 at once)"] = kernel_info_rate(client)
    figures["first cell after ready"] = execute(client, code["first"])[0]
    figures["start → first result (1 + 1 sent at ready)"] = (
        figures["start → ready"] + figures["first cell after ready"])
    execute(client, code["define"])
    for row in ("warm a + 1", "warm vec + len", "warm fn + call"):
        figures[row] = statistics.median(execute(client, code[row])[0] for _ in range(WARM_REPEATS))
    first_stream = []
    elapsed, streams = execute(client, code["print 2000 lines"], stream_start=first_stream)
    figures["print 2000 lines"] = elapsed
    # The output part alone (a Rust cell's time is mostly its compile).
    figures["  … first line → idle"] = elapsed - first_stream[0]
    figures["  … stream messages for them"] = streams
    for magic in ("!pwd", "%pwd"):
        if code.get(magic):
            figures[f"{magic} (median of {MAGIC_REPEATS})"] = statistics.median(
                execute(client, code[magic])[0] for _ in range(MAGIC_REPEATS)
            )
    pid = manager.provisioner.process.pid
    if with_memory:
        figures["kernel RSS idle (MiB)"] = (rss_kib(pid) or 0) / 1024
        for _ in range(MEMORY_CELLS):
            execute(client, code["warm a + 1"])
        figures[f"kernel RSS after {MEMORY_CELLS} more cells (MiB)"] = (rss_kib(pid) or 0) / 1024
    # Floods last: interrupting a Rust loop restarts the runtime (variables lost).
    floods = FLOOD[name]
    for row, label in (("!yes", "!timeout 3 yes"), ("print loop", "print 100 MB in a loop")):
        if floods.get(row):
            rate, peak = flood(client, pid, floods[row])
            figures[f"{label}: MB/s delivered"] = rate
            figures[f"{label}: peak kernel RSS above start (MiB)"] = peak
    if floods.get("!yes"):
        _, peak = flood(client, pid, "!timeout 2 yes", slow_seconds=4)
        figures["!timeout 2 yes, slow client: peak kernel RSS above start (MiB)"] = peak
    figures["interrupt an endless print → reply"] = interrupt_latency(manager, client, floods["endless print"])
    if floods.get("!yes"):
        figures["interrupt !yes → reply"] = interrupt_latency(manager, client, "!yes")
    start = time.perf_counter()
    manager.restart_kernel(now=False)
    client.wait_for_ready(timeout=300)
    execute(client, code["first"])
    figures["restart → first result (1 + 1)"] = time.perf_counter() - start
    client.stop_channels()
    manager.shutdown_kernel(now=False)
    figures.update(reading_start(name))
    return figures


def reading_start(name):
    """A person opens a notebook, reads for READING_PAUSE seconds, then runs a
    cell that defines a variable and one more: what the first cells cost once
    the kernel has had a moment (the figures above send the first cell at ready)."""
    code = CODE[name]
    manager, client = jupyter_client.manager.start_new_kernel(kernel_name=name, startup_timeout=300)
    time.sleep(READING_PAUSE)
    figures = {
        f"first cell `let a = 40 + 2; a`, {READING_PAUSE} s after ready": execute(client, code["first let"])[0],
        "  … then `let v = vec![1, 2, 3]; v.len()`": execute(client, code["warm vec + len"])[0],
    }
    client.stop_channels()
    manager.shutdown_kernel(now=False)
    return figures


SPARE_START = "start → first result (1 + 1), warm spare adopted"
SPARE_RESTART = "restart → first result (1 + 1), warm spare adopted"
SPARE_RSS = "warm spare: RSS with its Rust runtime (MiB)"


def spare_round():
    """ferrolab with its warm spare on (as shipped; the other rows run with
    FERROLAB_SPARE=0, the first kernel on a machine): a spare is started and
    warms up while nobody waits, a kernel start adopts it, and a restart
    adopts the next one, which that kernel started once it was idle."""
    binary = KernelSpecManager().get_kernel_spec("ferrolab").argv[0]
    spare_dir = tempfile.mkdtemp(prefix="ferrolab-bench-spare-")
    env = {**os.environ, "FERROLAB_SPARE": "1", "FERROLAB_SPARE_DIR": spare_dir,
           "FERROLAB_SPARE_MIN_FREE_MB": "0"}

    def warm(other_than=None):
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            done = subprocess.run([binary, "spare", "status", "--json"], env=env, capture_output=True,
                                  text=True, check=True)
            found = json.loads(done.stdout)["spare"]
            if found and found["ready"] and found["pid"] != other_than:
                return found
            time.sleep(0.2)
        raise RuntimeError("no warm spare within 300 s")

    subprocess.run([binary, "spare", "start"], env=env, check=True)
    first = warm()
    figures = {SPARE_RSS: first["rss_bytes"] / (1024 * 1024)}
    start = time.perf_counter()
    manager, client = jupyter_client.manager.start_new_kernel(kernel_name="ferrolab", startup_timeout=300, env=env)
    execute(client, CODE["ferrolab"]["first"])
    figures[SPARE_START] = time.perf_counter() - start
    warm(other_than=first["pid"])
    start = time.perf_counter()
    manager.restart_kernel(now=False)
    client.wait_for_ready(timeout=300)
    execute(client, CODE["ferrolab"]["first"])
    figures[SPARE_RESTART] = time.perf_counter() - start
    client.stop_channels()
    manager.shutdown_kernel(now=False)
    subprocess.run([binary, "spare", "stop"], env=env, capture_output=True)
    return figures


def print_spare_table(results):
    ours = results.get("ferrolab", {})
    peer = results.get("evcxr", {})
    if SPARE_START not in ours:
        return
    print("\nWith the warm spare (ferrolab as shipped) beside evcxr_jupyter's start and restart:\n")
    print("| figure | ferrolab, spare adopted | evcxr_jupyter | ratio |")
    print("|---|---|---|---|")
    for figure, theirs in ((SPARE_START, "start → first result (1 + 1 sent at ready)"),
                           (SPARE_RESTART, "restart → first result (1 + 1)"), (SPARE_RSS, "kernel RSS idle (MiB)")):
        a, b = ours.get(figure, []), peer.get(theirs, [])
        ratio = f"{statistics.median(a) / statistics.median(b):.2f}×" if a and b else "—"
        print(f"| {figure} (evcxr: {theirs}) | {cell(a, figure)} | {cell(b, theirs)} | {ratio} |")


def soak(minutes):
    """Mixed cells, floods and interrupts for `minutes`; kernel RSS over time."""
    manager, client = jupyter_client.manager.start_new_kernel(kernel_name="ferrolab", startup_timeout=300)
    pid = manager.provisioner.process.pid
    execute(client, "let mut total = 0u64;\ntotal")
    start = time.perf_counter()
    samples = [(0.0, (rss_kib(pid) or 0) / 1024)]
    counts = {"rust": 0, "magic": 0, "shell": 0, "flood": 0, "slow flood": 0, "interrupt": 0}
    peak = samples[0][1]
    round_number = 0
    while time.perf_counter() - start < minutes * 60:
        round_number += 1
        try:
            execute(client, f"total += {round_number};\ntotal")
        except RuntimeError:  # `total` is gone after an interrupt restarted the runtime
            execute(client, "let mut total = 0u64;\ntotal")
        counts["rust"] += 1
        for _ in range(10):
            execute(client, "%pwd")
            execute(client, f"!echo {round_number}")
        counts["magic"] += 10
        counts["shell"] += 10
        _, flood_peak = flood(client, pid, "!timeout 1 yes")
        counts["flood"] += 1
        if round_number % 3 == 0:
            _, flood_peak = flood(client, pid, "!timeout 1 yes", slow_seconds=2)
            counts["slow flood"] += 1
        if round_number % 2 == 0:
            interrupt_latency(manager, client, 'loop { println!("y"); }' if round_number % 4 == 0 else "!yes")
            counts["interrupt"] += 1
        now = (rss_kib(pid) or 0) / 1024
        peak = max(peak, now + flood_peak)
        samples.append((time.perf_counter() - start, now))
        print(f"  {samples[-1][0] / 60:5.1f} min: kernel RSS {now:.1f} MiB", file=sys.stderr)
    client.stop_channels()
    manager.shutdown_kernel(now=False)
    first = [rss for t, rss in samples if t <= 300]
    last = [rss for t, rss in samples if t >= samples[-1][0] - 300]
    print(f"\nsoak, {date.today()}, {platform.node()} ({os.cpu_count()} CPUs): {minutes} min, "
          f"{round_number} rounds, {counts}")
    print(f"kernel RSS: start {samples[0][1]:.1f} MiB, first 5 min median {statistics.median(first):.1f} MiB, "
          f"last 5 min median {statistics.median(last):.1f} MiB, highest after a round {max(r for _, r in samples):.1f} "
          f"MiB, highest during a flood about {peak:.1f} MiB")


# `%checkpoint` rows: a model-sized variable saved and restored (ferrolab only;
# evcxr_jupyter has no checkpoints). 64 Mi f32 = 256 MiB, written as MessagePack.
CHECKPOINT_FLOATS = 64 << 20
CHECKPOINT_MIB = CHECKPOINT_FLOATS * 4 / (1 << 20)
CHECKPOINT_ROWS = {
    "save": f"`%checkpoint save` of a Vec<f32> of {CHECKPOINT_FLOATS * 4 / 1e6:.0f} MB",
    "save rate": "  … MiB/s",
    "restore": "`%checkpoint restore` of it (re-hash, then load)",
}


def checkpoint_round(kernel_name):
    """Seconds for a second `%checkpoint save` of a large `Vec<f32>` (the first
    one also adds the checkpoint runtime, from a prebuilt cache, untimed) and
    for restoring it; each save is fsynced, so the disk's speed is in it."""
    with tempfile.TemporaryDirectory(prefix="ferrolab-bench-ckpt-") as scratch:
        env = {"XDG_CACHE_HOME": scratch,
               "FERROLAB_BUILD_CACHE_DIR": os.path.join(scratch, "ferrolab-build-cache"),
               "FERROLAB_CHECKPOINT_DIR": os.path.join(scratch, "checkpoints")}
        prebuild_runtime(env, kernel_name)
        manager = jupyter_client.KernelManager(kernel_name=kernel_name)
        manager.start_kernel(env={**os.environ, **env})
        client = manager.client()
        client.start_channels()
        try:
            client.wait_for_ready(timeout=300)
            execute(client, f"let weights: Vec<f32> = (0..{CHECKPOINT_FLOATS}u32)"
                            ".map(|i| i as f32 * 0.5).collect();\nweights.len()")
            execute(client, "%checkpoint save first", timeout=3600)
            save = execute(client, "%checkpoint save second", timeout=3600)[0]
            # A save that skipped the variable would be quick and mean nothing.
            saved = [os.path.join(root, name) for root, _, names in os.walk(env["FERROLAB_CHECKPOINT_DIR"])
                     for name in names if root.endswith("-second/vars")]
            if not saved or os.path.getsize(saved[0]) < CHECKPOINT_FLOATS * 4:
                raise RuntimeError(f"`%checkpoint save second` did not write the variable: {saved}")
            restore = execute(client, "%checkpoint restore second", timeout=3600)[0]
            return {CHECKPOINT_ROWS["save"]: save, CHECKPOINT_ROWS["save rate"]: CHECKPOINT_MIB / save,
                    CHECKPOINT_ROWS["restore"]: restore}
        finally:
            client.stop_channels()
            manager.shutdown_kernel(now=False)


def print_checkpoint_table(kernels, rounds, results):
    """The `%checkpoint` rows for ferrolab (and the build before it, when given),
    kept in `results` so that `--json` has them too."""
    ours = [name for name in kernels if name.startswith("ferrolab")]
    if not ours:
        return
    for round_number in range(rounds):
        for name in ours:
            print(f"checkpoint round {round_number + 1}/{rounds}: {LABEL[name]}", file=sys.stderr)
            for figure, value in checkpoint_round(name).items():
                results[name].setdefault(figure, []).append(value)
    print(f"\n%checkpoint: {rounds} round(s), medians (min–max); evcxr_jupyter has no checkpoints\n")
    header = ["figure"] + [LABEL[name] for name in ours]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for figure in CHECKPOINT_ROWS.values():
        print("| " + " | ".join([figure] + [cell(results[name].get(figure, []), figure) for name in ours]) + " |")


def kernelspecs(evcxr_binary, ferrolab_before=None):
    """A private kernelspec directory holding the peer kernels."""
    directory = tempfile.mkdtemp(prefix="ferrolab-bench-")
    specs = {
        "ferrolab-before": {
            "argv": [ferrolab_before or "ferrolab", "kernel", "--connection-file", "{connection_file}"],
            "display_name": "Rust (ferrolab, before)",
            "language": "rust",
            "interrupt_mode": "message",
        },
        "evcxr": {
            "argv": [evcxr_binary, "--control_file", "{connection_file}"],
            "display_name": "Rust (evcxr_jupyter)",
            "language": "rust",
            "interrupt_mode": "message",
        },
        "python3": {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (ipykernel)",
            "language": "python",
        },
    }
    for name, spec in specs.items():
        os.makedirs(os.path.join(directory, "kernels", name))
        with open(os.path.join(directory, "kernels", name, "kernel.json"), "w") as file:
            json.dump(spec, file)
    return directory


def fmt(value, figure):
    if "MiB" in figure or "MB/s" in figure:
        return f"{value:.1f}"
    if "messages" in figure or "/s" in figure:
        return f"{value:.0f}"
    return f"{value * 1000:.3g} ms" if value < 1 else f"{value:.2f} s"


def cell(values, figure):
    if not values:
        return "—"
    median = statistics.median(values)
    if len(values) == 1:
        return fmt(median, figure)
    return f"{fmt(median, figure)} ({fmt(min(values), figure)}–{fmt(max(values), figure)})"


# ---- `:dep` in a first and a second kernel (the build cache) ----

WARMED_LABEL = "ferrolab, :dep after its idle warm-up"
DEP_VARIANTS = {
    # label: (kernel name, cell run before the timed one, `ferrolab prebuild` first,
    #         wait until the kernel's own warm-up put its runtime in the cache)
    "ferrolab": ("ferrolab", None, False, False),
    WARMED_LABEL: ("ferrolab", None, False, True),
    "ferrolab after ./kernel lab's prebuild": ("ferrolab", None, True, False),
    "evcxr_jupyter": ("evcxr", None, False, False),
    "evcxr_jupyter + :cache 2000": ("evcxr", ":cache 2000", False, False),
}


def prebuild_runtime(env, kernel_name="ferrolab"):
    """What `./kernel lab` starts in the background: ferrolab's own crates into the cache (untimed)."""
    binary = KernelSpecManager().get_kernel_spec(kernel_name).argv[0]
    subprocess.run([binary, "prebuild"], env={**os.environ, **env}, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=3600)


def dep_cell(spec):
    """`:dep SPEC` and a line that uses the crate (`use name as _;`)."""
    name = spec.split("=")[0].strip().replace("-", "_")
    return f":dep {spec}\nuse {name} as _;\n1"


def wait_for_warm_runtime(env):
    """Until `ferrolab cache stats` says the checkpoint runtime is in the cache
    (a kernel compiles it there once idle, when the cache lacks it)."""
    binary = KernelSpecManager().get_kernel_spec("ferrolab").argv[0]
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        done = subprocess.run([binary, "cache", "stats", "--json"], env={**os.environ, **env},
                              capture_output=True, text=True, check=True)
        if json.loads(done.stdout).get("runtime") == "ready":
            return
        time.sleep(0.5)
    raise RuntimeError("the kernel's warm-up did not finish within 600 s")


def dep_in_new_kernel(kernel_name, env, setup, cell, warmed=False):
    """Seconds for `cell` in a kernel that has already run one cell (and, with
    `warmed`, waited for its warm-up: a user who reads before the first `:dep`)."""
    manager = jupyter_client.KernelManager(kernel_name=kernel_name)
    manager.start_kernel(env={**os.environ, **env})
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=300)
        execute(client, "1 + 1")
        if setup:
            execute(client, setup)
        if warmed:
            wait_for_warm_runtime(env)
        return execute(client, cell, timeout=3600)[0]
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=False)


SPARE_DEP_LABEL = "ferrolab, restart adopting its warm spare"


def dep_with_spare(spec, env):
    """The daily rhythm with spares on: a notebook's kernel runs the `:dep` cell
    (first kernel, timed), its warm spare builds and loads the notebook's crates
    while nobody waits (untimed), and after a restart, which adopts that spare,
    the same cell runs again (second kernel, timed)."""
    binary = KernelSpecManager().get_kernel_spec("ferrolab").argv[0]
    spare_dir = tempfile.mkdtemp(prefix="ferrolab-bench-spare-")
    env = {**os.environ, **env, "FERROLAB_SPARE": "1", "FERROLAB_SPARE_DIR": spare_dir,
           "FERROLAB_SPARE_MIN_FREE_MB": "0", "JPY_SESSION_NAME": "bench.ipynb"}
    line = dep_cell(spec).splitlines()[0]
    manager = jupyter_client.KernelManager(kernel_name="ferrolab")
    manager.start_kernel(env=env)
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=300)
        execute(client, "1 + 1")
        first = execute(client, dep_cell(spec), timeout=3600)[0]
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = subprocess.run([binary, "spare", "status", "--json"], env=env, capture_output=True,
                                  text=True, check=True)
            found = json.loads(done.stdout)["spare"]
            if found and found["ready"] and line in found.get("loaded", []):
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("the spare did not load the notebook's crates within 600 s")
        manager.restart_kernel(now=False)
        client.wait_for_ready(timeout=300)
        execute(client, "1 + 1")
        second = execute(client, dep_cell(spec), timeout=3600)[0]
        return {"first kernel": first, "second kernel": second}
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=False)
        subprocess.run([binary, "spare", "stop"], env=env, capture_output=True)


def dep_rows(kernels, spec, rounds):
    """{variant: {row: [seconds per round]}} for a first and a second kernel."""
    cell = dep_cell(spec)
    results = {}
    for round_number in range(rounds):
        if "ferrolab" in kernels:
            with tempfile.TemporaryDirectory(prefix="ferrolab-bench-cache-") as cache:
                print(f"dep round {round_number + 1}/{rounds}: {SPARE_DEP_LABEL}", file=sys.stderr)
                env = {"XDG_CACHE_HOME": cache,
                       "FERROLAB_BUILD_CACHE_DIR": os.path.join(cache, "ferrolab-build-cache")}
                for row, seconds in dep_with_spare(spec, env).items():
                    results.setdefault(SPARE_DEP_LABEL, {}).setdefault(row, []).append(seconds)
        for label, (kernel_name, setup, prebuild, warmed) in DEP_VARIANTS.items():
            if kernel_name not in kernels:
                continue
            with tempfile.TemporaryDirectory(prefix="ferrolab-bench-cache-") as cache:
                # Private, empty caches: evcxr's :cache lives in $XDG_CACHE_HOME/evcxr.
                env = {"XDG_CACHE_HOME": cache,
                       "FERROLAB_BUILD_CACHE_DIR": os.path.join(cache, "ferrolab-build-cache")}
                if prebuild:
                    prebuild_runtime(env)
                for row in ("first kernel", "second kernel"):
                    print(f"dep round {round_number + 1}/{rounds}: {label}, {row}", file=sys.stderr)
                    seconds = dep_in_new_kernel(kernel_name, env, setup, cell,
                                                warmed=warmed and row == "first kernel")
                    results.setdefault(label, {}).setdefault(row, []).append(seconds)
    return results


def print_dep_table(spec, results, rounds):
    labels = list(results)
    ours = [label for label in labels if label.startswith("ferrolab")]
    peers = [label for label in labels if label not in ours]
    pairs = [(mine, peer) for mine in ours for peer in peers]
    short = {"ferrolab": "ferrolab", "ferrolab after ./kernel lab's prebuild": "prebuilt",
             SPARE_DEP_LABEL: "with spare", WARMED_LABEL: "warmed"}
    header = (["`:dep " + spec + "`"] + labels
              + [f"{short.get(mine, mine)} ÷ {peer}" for mine, peer in pairs])
    print(f"\nbuild cache: `:dep {spec}` (and one use of it) after the kernel ran one cell; "
          f"{rounds} round(s), fresh caches per round, medians (min–max)\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in ("first kernel", "second kernel"):
        line = [row] + [cell(results[label].get(row, []), row) for label in labels]
        for mine, peer in pairs:
            a, b = results[mine].get(row), results[peer].get(row)
            line.append(f"{statistics.median(a) / statistics.median(b):.2f}×" if a and b else "—")
        print("| " + " | ".join(line) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--kernels", default="ferrolab,evcxr,python3")
    parser.add_argument("--evcxr-binary", help="evcxr_jupyter to compare with (./kernel bench installs one)")
    parser.add_argument("--dep-rounds", type=int, default=1, help="rounds of the :dep rows (0 skips them)")
    parser.add_argument("--dep", default='regex = "1"', help="the crate the :dep rows build")
    parser.add_argument("--ferrolab-before", metavar="PATH",
                        help="another ferrolab binary to compare with (adds a 'ferrolab before' column)")
    parser.add_argument("--soak", type=float, metavar="MINUTES",
                        help="run the soak (mixed cells, floods, interrupts) instead of the comparison")
    parser.add_argument("--no-spare", action="store_true", help="skip the warm-spare rows")
    parser.add_argument("--no-checkpoint", action="store_true", help="skip the %%checkpoint rows")
    args = parser.parse_args()
    # The main rows time a kernel with no spare to adopt (the first on a machine);
    # `spare_round` times the warm spare.
    os.environ["FERROLAB_SPARE"] = "0"
    if args.soak:
        soak(args.soak)
        return

    wanted = args.kernels.split(",")
    if args.ferrolab_before and "ferrolab-before" not in wanted:
        wanted.insert(1, "ferrolab-before")
    if "evcxr" in wanted and not (args.evcxr_binary and os.access(args.evcxr_binary, os.X_OK)):
        print("note: evcxr_jupyter is not available, so its column is skipped")
        wanted.remove("evcxr")
    extra = kernelspecs(args.evcxr_binary or "evcxr_jupyter", args.ferrolab_before)
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [extra, os.environ.get("JUPYTER_PATH")]))
    available = KernelSpecManager().find_kernel_specs()
    kernels = [name for name in wanted if name in available]
    for name in set(wanted) - set(kernels):
        print(f"note: no kernelspec named {name!r}; skipped")

    results = {name: {} for name in kernels}
    for round_number in range(args.rounds):
        for name in kernels:
            print(f"round {round_number + 1}/{args.rounds}: {LABEL[name]}", file=sys.stderr)
            for figure, value in one_round(name, with_memory=round_number == 0).items():
                results[name].setdefault(figure, []).append(value)
                print(f"  {figure}: {fmt(value, figure)}", file=sys.stderr)
            if name == "ferrolab" and not args.no_spare:
                for figure, value in spare_round().items():
                    results[name].setdefault(figure, []).append(value)
                    print(f"  {figure}: {fmt(value, figure)}", file=sys.stderr)

    figures = []
    for per_kernel in results.values():
        figures += [figure for figure in per_kernel if figure not in figures]
    peers = [name for name in kernels if name != "ferrolab"]
    header = ["figure"] + [LABEL[k] for k in kernels] + [f"ferrolab ÷ {LABEL[p]}" for p in peers]
    print(f"\nferrolab benchmark, {date.today()}, {platform.node()} "
          f"({os.cpu_count()} CPUs, {platform.machine()}, Linux {platform.release()}), "
          f"{args.rounds} rounds, medians (min–max)\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for figure in figures:
        row = [figure] + [cell(results[k].get(figure, []), figure) for k in kernels]
        for peer in peers:
            ours, theirs = results.get("ferrolab", {}).get(figure), results[peer].get(figure)
            if ours and theirs and statistics.median(theirs) > 0:
                row.append(f"{statistics.median(ours) / statistics.median(theirs):.2f}×")
            else:
                row.append("—")
        print("| " + " | ".join(row) + " |")
    print_spare_table(results)
    if not args.no_checkpoint:
        print_checkpoint_table(kernels, args.rounds, results)
    dep_results = dep_rows(kernels, args.dep, args.dep_rounds) if args.dep_rounds > 0 else {}
    if dep_results:
        print_dep_table(args.dep, dep_results, args.dep_rounds)
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"date": str(date.today()), "machine": platform.node(), "cpus": os.cpu_count(),
                       "rounds": args.rounds, "results": {LABEL[k]: v for k, v in results.items()},
                       "dep": {"spec": args.dep, "results": dep_results}}, file, indent=2)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
