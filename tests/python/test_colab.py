"""notebooks/colab_setup.ipynb's setup cells, run as Colab runs them (a Python
kernel), against local paths instead of the network: the ferrolab binary built
by this test run, a private kernel prefix, and the toolchain already here. The
last setup cell starts the installed `rust` kernel over ipc and runs a cell."""

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "colab_setup.ipynb"


def test_metadata_makes_colab_open_the_rust_kernel():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert notebook.metadata["kernelspec"]["name"] == "rust"
    sources = "\n".join(cell.source for cell in notebook.cells)
    # The kernelspec it installs has the name the metadata asks for.
    assert 'KERNEL_NAME = "rust"' in sources
    assert '"install", "--prefix", KERNEL_PREFIX, "--name", KERNEL_NAME' in sources


def test_setup_cells_install_a_working_kernel(tmp_path):
    binary = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "ferrolab"
    assert binary.is_file(), f"{binary} missing: ./kernel test builds it first"
    prefix = tmp_path / "prefix"
    env = {
        "FERROLAB_SOURCE": str(ROOT),
        "FERROLAB_BINARY": str(binary),
        "RUSTUP_INIT": str(tmp_path / "no-network-rustup-init.sh"),
        "FERROLAB_KERNEL_PREFIX": str(prefix),
        "CARGO_HOME": str(tmp_path / "cargo-home"),
        "JUPYTER_PATH": str(prefix / "share" / "jupyter"),
    }
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells = [cell for cell in notebook.cells if "colab-setup" in cell.metadata.get("tags", [])]
    assert len(notebook.cells) == 3
    with pytest.MonkeyPatch.context() as patch:  # the environment is restored after
        for key, value in env.items():
            patch.setenv(key, value)
        NotebookClient(notebook, kernel_name="python3", timeout=600,
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for cell in notebook.cells for o in cell.outputs)
    assert (prefix / "share/jupyter/kernels/rust/kernel.json").is_file()
    assert (tmp_path / "cargo-home/bin/ferrolab").is_file()
    assert "ferrolab answers over ipc" in outputs, outputs
