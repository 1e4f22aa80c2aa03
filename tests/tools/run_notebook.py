"""Executes a notebook headless with nbclient (used by `./kernel run`).

Usage: run_notebook.py NOTEBOOK.ipynb [-o OUTPUT.ipynb] [--timeout SECONDS]

The executed notebook (every output kept) is written to OUTPUT, or back to the
input file. Cells tagged `raises-exception` may fail; any other failing cell stops
the run, is saved with its error, and makes the exit status non-zero.
"""

import argparse
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("-o", "--output", type=Path)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell (default 1800)")
    parser.add_argument("--kernel", default=None, help="kernel name (default: the notebook's)")
    args = parser.parse_args()

    if not args.notebook.is_file():
        print(f"error: notebook not found: {args.notebook}", file=sys.stderr)
        return 2
    notebook = nbformat.read(args.notebook, as_version=4)
    kernel_name = args.kernel or notebook.metadata.get("kernelspec", {}).get("name", "ferrolab")
    output = args.output or args.notebook
    client = NotebookClient(
        notebook,
        timeout=args.timeout,
        kernel_name=kernel_name,
        resources={"metadata": {"path": str(args.notebook.resolve().parent)}},
    )
    status = 0
    try:
        client.execute()
    except CellExecutionError as error:
        print(f"error: a cell failed in {args.notebook}:\n{error}", file=sys.stderr)
        status = 1
    finally:
        nbformat.write(notebook, output)
        print(f"wrote {output}")
    return status


if __name__ == "__main__":
    sys.exit(main())
