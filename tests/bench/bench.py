"""`./kernel bench`: ferrolab side by side with evcxr_jupyter and ipykernel.

Each kernel is started by its kernelspec through jupyter_client, as a frontend
does. Rounds alternate the kernels so that drift of the machine hits all of them
alike; every figure is the median over rounds (with min–max), and every row shows
ferrolab ÷ peer from this same run. Benchmarks print figures; nothing here
asserts a time.

Usage: bench.py [--rounds N] [--json FILE] [--kernels ferrolab,evcxr,python3]
                [--evcxr-binary PATH] [--dep-rounds N] [--dep SPEC]

The `:dep` rows build a crate in a first and then a second kernel, each pair
with fresh cache directories: ferrolab (its build cache on, as shipped),
evcxr_jupyter as shipped, and evcxr_jupyter with its own `:cache` switched on.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date

import jupyter_client
from jupyter_client.kernelspec import KernelSpecManager

# The same work in each language. `None`: the kernel has no equivalent.
RUST = {
    "first": "1 + 1",
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
    "define": "a = 41",
    "warm a + 1": "a + 1",
    "warm vec + len": "v = [1, 2, 3]; len(v)",
    "warm fn + call": "def double(x):\n    return x * 2\ndouble(a)",
    "print 2000 lines": 'for i in range(2000):\n    print(f"line {i}")',
    "!pwd": "!pwd",
    "%pwd": "%pwd",
}
CODE = {"ferrolab": RUST, "evcxr": {**RUST, "%pwd": None}, "python3": PYTHON}
LABEL = {"ferrolab": "ferrolab", "evcxr": "evcxr_jupyter", "python3": "ipykernel"}
WARM_REPEATS = 5
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


def one_round(name, with_memory):
    code = CODE[name]
    figures = {}
    start = time.perf_counter()
    manager, client = jupyter_client.manager.start_new_kernel(kernel_name=name, startup_timeout=300)
    figures["start → ready"] = time.perf_counter() - start
    info = []
    for _ in range(20):
        t = time.perf_counter()
        client.kernel_info(reply=True, timeout=30)
        info.append(time.perf_counter() - t)
    figures["kernel_info round trip"] = statistics.median(info)
    figures["first cell after ready"] = execute(client, code["first"])[0]
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
    if with_memory:
        pid = manager.provisioner.process.pid
        figures["kernel RSS idle (MiB)"] = (rss_kib(pid) or 0) / 1024
        for _ in range(MEMORY_CELLS):
            execute(client, code["warm a + 1"])
        figures[f"kernel RSS after {MEMORY_CELLS} more cells (MiB)"] = (rss_kib(pid) or 0) / 1024
    client.stop_channels()
    manager.shutdown_kernel(now=False)
    return figures


def kernelspecs(evcxr_binary):
    """A private kernelspec directory holding the three kernels."""
    directory = tempfile.mkdtemp(prefix="ferrolab-bench-")
    specs = {
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
    if "MiB" in figure:
        return f"{value:.1f}"
    if "messages" in figure:
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

DEP_VARIANTS = {
    # label: (kernel name, cell run before the timed one)
    "ferrolab": ("ferrolab", None),
    "evcxr_jupyter": ("evcxr", None),
    "evcxr_jupyter + :cache 4096": ("evcxr", ":cache 4096"),
}


def dep_cell(spec):
    """`:dep SPEC` and a line that uses the crate (`use name as _;`)."""
    name = spec.split("=")[0].strip().replace("-", "_")
    return f":dep {spec}\nuse {name} as _;\n1"


def dep_in_new_kernel(kernel_name, env, setup, cell):
    """Seconds for `cell` in a kernel that has already run one cell."""
    manager = jupyter_client.KernelManager(kernel_name=kernel_name)
    manager.start_kernel(env={**os.environ, **env})
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=300)
        execute(client, "1 + 1")
        if setup:
            execute(client, setup)
        return execute(client, cell, timeout=3600)[0]
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=False)


def dep_rows(kernels, spec, rounds):
    """{variant: {row: [seconds per round]}} for a first and a second kernel."""
    cell = dep_cell(spec)
    results = {}
    for round_number in range(rounds):
        for label, (kernel_name, setup) in DEP_VARIANTS.items():
            if kernel_name not in kernels:
                continue
            with tempfile.TemporaryDirectory(prefix="ferrolab-bench-cache-") as cache:
                # Private, empty caches: evcxr's :cache lives in $XDG_CACHE_HOME/evcxr.
                env = {"XDG_CACHE_HOME": cache,
                       "FERROLAB_BUILD_CACHE_DIR": os.path.join(cache, "ferrolab-build-cache")}
                for row in ("first kernel", "second kernel"):
                    print(f"dep round {round_number + 1}/{rounds}: {label}, {row}", file=sys.stderr)
                    seconds = dep_in_new_kernel(kernel_name, env, setup, cell)
                    results.setdefault(label, {}).setdefault(row, []).append(seconds)
    return results


def print_dep_table(spec, results, rounds):
    labels = list(results)
    peers = [label for label in labels if label != "ferrolab"]
    header = ["`:dep " + spec + "`"] + labels + [f"ferrolab ÷ {peer}" for peer in peers]
    print(f"\nbuild cache: `:dep {spec}` (and one use of it) after the kernel ran one cell; "
          f"{rounds} round(s), fresh caches per round, medians (min–max)\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in ("first kernel", "second kernel"):
        line = [row] + [cell(results[label].get(row, []), row) for label in labels]
        for peer in peers:
            ours = results.get("ferrolab", {}).get(row)
            theirs = results[peer].get(row)
            line.append(f"{statistics.median(ours) / statistics.median(theirs):.2f}×"
                        if ours and theirs else "—")
        print("| " + " | ".join(line) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--kernels", default="ferrolab,evcxr,python3")
    parser.add_argument("--evcxr-binary", help="evcxr_jupyter to compare with (./kernel bench installs one)")
    parser.add_argument("--dep-rounds", type=int, default=1, help="rounds of the :dep rows (0 skips them)")
    parser.add_argument("--dep", default='regex = "1"', help="the crate the :dep rows build")
    args = parser.parse_args()

    wanted = args.kernels.split(",")
    if "evcxr" in wanted and not (args.evcxr_binary and os.access(args.evcxr_binary, os.X_OK)):
        print("note: evcxr_jupyter is not available, so its column is skipped")
        wanted.remove("evcxr")
    extra = kernelspecs(args.evcxr_binary or "evcxr_jupyter")
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
