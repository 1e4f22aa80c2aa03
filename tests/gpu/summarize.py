"""One line about an executed gpu.ipynb: the GPU, the result check, and each
code cell's run time (from nbclient's timing metadata)."""

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


if __name__ == "__main__":
    main(sys.argv[1])
