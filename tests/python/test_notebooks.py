"""Every notebook in notebooks/ runs clean, headless, through `./kernel run`'s runner;
a failing cell makes the run fail and is saved in the output notebook."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "tests" / "tools" / "run_notebook.py"
# Notebooks with their own test: colab_setup.ipynb is a Python notebook for Colab
# (test_colab.py); kaggle_train.ipynb needs the fake Kaggle server (test_train_notebook.py).
OWN_TESTS = {"colab_setup.ipynb", "kaggle_train.ipynb"}
NOTEBOOKS = sorted(n for n in (ROOT / "notebooks").glob("*.ipynb") if n.name not in OWN_TESTS)


def run(notebook, output):
    return subprocess.run(
        [sys.executable, str(RUNNER), str(notebook), "-o", str(output), "--timeout", "600"],
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.name for n in NOTEBOOKS])
def test_notebook_runs_clean(notebook, tmp_path):
    output = tmp_path / notebook.name
    result = run(notebook, output)
    assert result.returncode == 0, result.stderr
    executed = nbformat.read(output, as_version=4)
    code_cells = [c for c in executed.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code_cells), "every code cell ran"
    for cell in code_cells:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        expected = "raises-exception" in cell.metadata.get("tags", [])
        assert bool(errors) == expected, (cell.source, errors)


def test_tour_outputs(tmp_path):
    output = tmp_path / "tour.ipynb"
    assert run(ROOT / "notebooks" / "tour.ipynb", output).returncode == 0
    cells = [c for c in nbformat.read(output, as_version=4).cells if c.cell_type == "code"]
    text = json.dumps([c.outputs for c in cells])
    assert "Hello from ferrolab!" in text
    assert "resnet-v2: 5 epochs, best loss 0.200" in text
    assert "<table><tr><th>epoch</th>" in text
    assert "Compiling fastrand" in text
    assert "expected at least 5 values, got 3" in text


def test_a_failing_cell_fails_the_run_and_is_saved(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "ferrolab", "display_name": "Rust (ferrolab)", "language": "rust"}
    notebook.cells = [
        nbformat.v4.new_code_cell('println!("before");'),
        nbformat.v4.new_code_cell("let broken: u8 = 300;"),
        nbformat.v4.new_code_cell('println!("never runs");'),
    ]
    source = tmp_path / "failing.ipynb"
    nbformat.write(notebook, source)
    output = tmp_path / "out.ipynb"
    result = run(source, output)
    assert result.returncode == 1
    assert "a cell failed" in result.stderr
    cells = nbformat.read(output, as_version=4).cells
    assert cells[0].outputs[0]["text"] == "before\n"
    assert cells[1].outputs[0]["output_type"] == "error"
    assert cells[2].execution_count is None


def test_missing_notebook_is_a_clear_error(tmp_path):
    result = run(tmp_path / "absent.ipynb", tmp_path / "out.ipynb")
    assert result.returncode == 2
    assert "notebook not found" in result.stderr


def test_papermill_runs_a_notebook_and_fails_on_errors(tmp_path):
    # papermill fails a run on any error output, even in cells tagged
    # raises-exception, so it runs magics.ipynb (the tour demonstrates errors).
    output = tmp_path / "magics.papermill.ipynb"
    ok = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "magics.ipynb"), str(output),
                         "--cwd", str(ROOT / "notebooks")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    cells = nbformat.read(output, as_version=4).cells
    assert "Writing train.csv" in json.dumps([c.get("outputs", []) for c in cells])
    failing = tmp_path / "failing.ipynb"
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "ferrolab", "display_name": "Rust (ferrolab)", "language": "rust"}
    notebook.cells = [nbformat.v4.new_code_cell("let broken: u8 = 300;")]
    nbformat.write(notebook, failing)
    bad = subprocess.run([sys.executable, "-m", "papermill", str(failing), str(tmp_path / "out.ipynb")],
                         capture_output=True, text=True)
    assert bad.returncode != 0
    saved = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert any(o.get("output_type") == "error" for c in saved.cells for o in c.get("outputs", []))


def test_html_export_highlights_rust(tmp_path):
    executed = tmp_path / "tour.ipynb"
    assert run(ROOT / "notebooks" / "tour.ipynb", executed).returncode == 0
    subprocess.run([sys.executable, "-m", "nbconvert", "--to", "html", str(executed)], check=True,
                   capture_output=True)
    html = (tmp_path / "tour.html").read_text()
    assert "hl-rust" in html
    # pygments' Rust lexer marks `let` and `fn` as keywords.
    assert '<span class="kd">let</span>' in html or '<span class="k">let</span>' in html


def gpu_notebook_with(saxpy_body):
    """gpu.ipynb with the GPU stood in by a CPU function of the same signature: its
    own result-check cell runs as written, against `saxpy_body`'s answer."""
    notebook = nbformat.read(ROOT / "notebooks" / "gpu.ipynb", as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    check = next(c for c in code if "RESULT CHECK" in c.source)
    stand_in = (
        "let gpu_available = true;\n"
        "fn saxpy_on_gpu(a: f32, x: &[f32], y: &[f32]) -> Result<(Vec<f32>, String), Box<dyn std::error::Error>> {\n"
        f"    {saxpy_body}\n"
        "}"
    )
    notebook.cells = [nbformat.v4.new_code_cell(stand_in), check]
    return notebook


@pytest.mark.parametrize("saxpy, passes", [
    ('Ok((x.iter().zip(y).map(|(x, y)| a * x + y).collect(), "stand-in".into()))', True),
    ('Ok((x.iter().zip(y).map(|(x, y)| a * x + y + 0.5).collect(), "stand-in".into()))', False),
    ('Err("CUDA_ERROR_NO_DEVICE".into())', False),
], ids=["right", "wrong", "failed"])
def test_the_gpu_notebook_fails_when_the_gpu_result_is_wrong(saxpy, passes, tmp_path):
    source = tmp_path / "gpu.ipynb"
    nbformat.write(gpu_notebook_with(saxpy), source)
    output = tmp_path / "gpu.executed.ipynb"
    assert (run(source, output).returncode == 0) == passes
    summary = subprocess.run([sys.executable, str(ROOT / "tests" / "gpu" / "summarize.py"), str(output)],
                             capture_output=True, text=True)
    assert (summary.returncode == 0) == passes, summary.stdout
    assert ("check: OK" in summary.stdout) == passes, summary.stdout
