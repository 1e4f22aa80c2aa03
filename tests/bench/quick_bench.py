"""Quick side-by-side timing of ferrolab and evcxr_jupyter (and ipykernel), through
jupyter_client exactly as a frontend starts them.

Usage: quick_bench.py [--rounds N] [--kernels ferrolab,evcxr,python3]

Prints medians (and min–max) of: start → ready (wait_for_ready), kernel_info round
trip, first cell after ready, warm cell `a + 1`. Kernels are alternated round by round
so machine drift hits all of them. A kernel whose kernelspec is missing is skipped
with a note. This is the seed of `./kernel bench` (issue: benchmarks).
"""

import argparse
import statistics
import time

import jupyter_client
from jupyter_client.kernelspec import NoSuchKernel

CELLS = {
    "python3": {"define": "a = 41", "warm": "a + 1", "first": "1 + 1"},
    "default": {"define": "let a = 41;", "warm": "a + 1", "first": "1 + 1"},
}


def execute(client, code, timeout=300):
    msg_id = client.execute(code)
    start = time.perf_counter()
    while True:
        message = client.get_iopub_msg(timeout=timeout)
        if (
            message["parent_header"].get("msg_id") == msg_id
            and message["msg_type"] == "status"
            and message["content"]["execution_state"] == "idle"
        ):
            break
    client.get_shell_msg(timeout=timeout)
    return time.perf_counter() - start


def one_round(name):
    cells = CELLS.get(name, CELLS["default"])
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
    figures["first cell after ready"] = execute(client, cells["first"])
    execute(client, cells["define"])
    warm = [execute(client, cells["warm"]) for _ in range(5)]
    figures["warm cell (a + 1)"] = statistics.median(warm)
    # Magics: the round trip of a cell that compiles nothing (median of 50).
    # evcxr_jupyter has no %pwd; its `!pwd` is evcxr's own shell line.
    if name != "evcxr":
        figures["%pwd (median of 50)"] = statistics.median(execute(client, "%pwd") for _ in range(50))
    figures["!pwd (median of 50)"] = statistics.median(execute(client, "!pwd") for _ in range(50))
    client.stop_channels()
    manager.shutdown_kernel(now=False)
    return figures


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kernels", default="ferrolab,evcxr,python3")
    args = parser.parse_args()
    kernels = []
    for name in args.kernels.split(","):
        try:
            jupyter_client.kernelspec.get_kernel_spec(name)
            kernels.append(name)
        except NoSuchKernel:
            print(f"note: no kernelspec named {name!r}; skipped")
    results = {name: {} for name in kernels}
    for _ in range(args.rounds):
        for name in kernels:
            for figure, value in one_round(name).items():
                results[name].setdefault(figure, []).append(value)
    figures = []
    for per_kernel in results.values():
        figures += [figure for figure in per_kernel if figure not in figures]

    def cell(values):
        unit, scale = ("ms", 1000) if max(values) < 1 else ("s", 1)
        return f"{statistics.median(values) * scale:.3g} {unit} ({min(values) * scale:.3g}–{max(values) * scale:.3g})"

    print("| figure | " + " | ".join(kernels) + " |")
    print("|---|" + "---|" * len(kernels))
    for figure in figures:
        print(f"| {figure} | " + " | ".join(cell(results[k][figure]) if figure in results[k] else "—" for k in kernels) + " |")


if __name__ == "__main__":
    main()
