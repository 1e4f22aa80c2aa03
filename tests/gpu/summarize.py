"""One line about an executed gpu.ipynb: the GPU, the result check, and each
code cell's run time (from nbclient's timing metadata).

Exit status 0 only when the GPU's result matched the CPU's ("RESULT CHECK: OK")
and no cell failed; 1 otherwise (a mismatch, a failed or skipped check, a check
never reached, any error output), so a script can trust it."""

import re
import sys
from datetime import datetime

import nbformat


def seconds(cell):
    timing = cell.metadata.get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return None
    parse = lambda stamp: datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (parse(end) - parse(start)).total_seconds()


def main(path):
    notebook = nbformat.read(path, as_version=4)
    text = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            text.append(output.get("text", ""))
            data = output.get("data", {})
            text.append(data.get("text/plain", ""))
            text.append(output.get("evalue", ""))
    joined = "\n".join(text)
    gpu = re.search(r"^device: (.+)$", joined, re.M)
    check = re.search(r"RESULT CHECK: (.+)$", joined, re.M)
    errors = [o.get("ename") for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    times = [seconds(c) for c in notebook.cells if c.cell_type == "code"]
    shown = ", ".join("?" if t is None else f"{t:.1f}s" for t in times)
    print(
        f"GPU: {gpu.group(1) if gpu else 'none found'} | check: {check.group(1) if check else 'not reached'}"
        f" | errors: {', '.join(errors) if errors else 'none'} | cell times: {shown}"
    )
    passed = bool(check) and check.group(1).startswith("OK") and not errors
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
