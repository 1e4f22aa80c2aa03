"""notebooks/kaggle_train.ipynb run headless end to end, as Run All would, against the fake
Kaggle server's `digits` competition (scikit-learn's 8x8 digits): a candle network learns,
the runtime dies mid-training, training resumes from the saved epoch with the saved
weights, and the submission reaches the server with the right row count and is scored.

candle is built once per machine: the notebook's kernel uses a build cache that outlives
the test run (`FERROLAB_TEST_LASTING_BUILD_CACHE`, set by `./kernel test` beside the cargo
target dir), so only the first run on a machine pays the cold build.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from fake_kaggle import USERS, FakeKaggle

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "tests" / "tools" / "run_notebook.py"
NOTEBOOK = ROOT / "notebooks" / "kaggle_train.ipynb"
EPOCH_LINE = re.compile(
    r"epoch\s+(\d+)\s+step\s+(\d+)\s+training loss ([\d.]+)\s+validation accuracy ([\d.]+)%")
CREDENTIAL_VARIABLES = ["KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_COMPETITION",
                        "KAGGLE_PATH", "KAGGLE_PROXY", "KAGGLE_API_ENVIRONMENT"]


def text_of(cell):
    """Everything a cell showed, as text."""
    parts = []
    for output in cell.get("outputs", []):
        if "text" in output:
            parts.append(output["text"])
        for value in output.get("data", {}).values():
            parts.append(value if isinstance(value, str) else json.dumps(value))
        if output.get("output_type") == "error":
            parts.append(output["ename"] + ": " + output["evalue"] + "\n" + "\n".join(output["traceback"]))
    return "".join(parts)


def cell_with(cells, snippet):
    """The one code cell whose source contains `snippet`."""
    found = [cell for cell in cells if cell.cell_type == "code" and snippet in cell.source]
    assert len(found) == 1, f"{len(found)} cells contain {snippet!r}"
    return found[0]


def epochs_in(cell):
    return [(int(e), int(s), float(loss), float(accuracy) / 100)
            for e, s, loss, accuracy in EPOCH_LINE.findall(text_of(cell))]


def plotted_points(cell):
    """The points of each line in the cell's last SVG plot (the live display, updated in place)."""
    svgs = [output["data"]["image/svg+xml"] for output in cell.outputs
            if "image/svg+xml" in output.get("data", {})]
    assert len(svgs) == 1, f"expected one live plot, found {len(svgs)}"
    svg = svgs[0] if isinstance(svgs[0], str) else "".join(svgs[0])
    # The two data lines (red loss, blue accuracy); the axes' ticks are short polylines too.
    lines = re.findall(r'<polyline[^>]*stroke="#(FF0000|0000FF)"[^>]*points="([^"]*)"', svg)
    return [len(points.split()) for _, points in lines]


def check_training_run(cells, data, submissions):
    """Every claim of the notebook, checked on its executed cells: the data came through
    %kaggle into `data`, the loss fell, the runtime died after epoch 6, training resumed
    from there with the saved weights and ended at >= 90% validation accuracy, and the one
    submission in `submissions` (the fake server's record) was scored. Returns
    (epoch lines before the crash, epoch lines after it) as (epoch, step, loss, accuracy).
    Also used by the GPU run (tests/gpu/train_on_gpu.py)."""

    # The data came through %kaggle into ./data, and the kernel moved there.
    assert {"train.csv", "test.csv", "sample_submission.csv"} <= {p.name for p in data.iterdir()}
    assert "train.csv" in text_of(cell_with(cells, "!ls -la"))

    # First run: epochs 1..6, a falling loss, then the runtime died.
    crashed = cell_with(cells, "std::process::abort()")
    before = epochs_in(crashed)
    assert [e for e, *_ in before] == [1, 2, 3, 4, 5, 6], text_of(crashed)
    assert before[-1][2] < before[0][2] / 2, f"the loss did not fall: {before}"
    errors = [o for o in crashed.outputs if o.output_type == "error"]
    assert errors and "history" in errors[0]["evalue"], text_of(crashed)
    assert plotted_points(crashed) == [6, 6]
    assert "6/15 (40%)" in text_of(crashed), "no progress bar at epoch 6"

    # Restore: the epoch, step and weights of epoch 6 came back.
    resumed = text_of(cell_with(cells, "varmap.load("))
    match = re.search(r"resumed after epoch (\d+) \(step (\d+)\): validation accuracy ([\d.]+)%", resumed)
    assert match, resumed
    assert (int(match[1]), int(match[2])) == (6, before[-1][1])
    # The loaded weights are the trained ones: a fresh network is near 10%.
    assert abs(float(match[3]) / 100 - before[-1][3]) < 0.005, (resumed, before[-1])

    # Training went on from epoch 7 (not from 0) to the end, and learned.
    continued_cell = [c for c in cells if c.cell_type == "code" and "while epoch < EPOCHS" in c.source
                      and "abort" not in c.source]
    assert len(continued_cell) == 1
    after = epochs_in(continued_cell[0])
    assert [e for e, *_ in after] == list(range(7, 16)), text_of(continued_cell[0])
    assert after[0][1] > before[-1][1], "the optimizer step count restarted"
    assert after[-1][2] < before[0][2] / 4, f"the loss did not fall: {before + after}"
    final_accuracy = after[-1][3]
    assert final_accuracy >= 0.90, f"validation accuracy {final_accuracy:.1%} is under 90%"
    assert final_accuracy >= before[-1][3], "the resumed run ended worse than where it stopped"
    assert plotted_points(continued_cell[0]) == [15, 15]
    assert "15/15 (100%)" in text_of(continued_cell[0]), "no progress bar at the end"

    # The weights went into a checkpoint with the training state.
    manifests = sorted((data / "checkpoints").glob("ckpt-*/MANIFEST.json"))
    assert manifests, "no checkpoint was written"
    newest = json.loads(manifests[-1].read_text())
    assert "model.safetensors" in json.dumps(newest)

    # The submission reached the server, with one row per test image, and was scored.
    assert len(submissions) == 1
    submission = submissions[0]
    rows = submission["data"].decode().split()
    assert rows[0] == "id,label" and len(rows) - 1 == len(submission["answers"])
    assert submission["status"] == "COMPLETE"
    score = float(submission["publicScore"])
    assert score >= 0.85, f"test accuracy {score:.1%}"
    assert submission["publicScore"] in text_of(cell_with(cells, "competitions submit"))
    shown = text_of(cell_with(cells, "leaderboard"))
    assert "Iceberg Dodgers" in shown and submission["publicScore"] in shown
    return before, after


def run_training(notebook, workdir, server, extra_env=None, runner=RUNNER):
    """Runs `notebook` headless from a copy in `workdir`, as Run All would, signed in to
    `server` as alice; returns the executed cells. Fails when a cell not tagged
    `raises-exception` failed."""
    config = workdir / "kaggle-config"
    config.mkdir()
    credentials = config / "kaggle.json"
    credentials.write_text(json.dumps({"username": "alice", "key": USERS["alice"]}))
    credentials.chmod(0o600)
    env = {**os.environ, **{name: "" for name in CREDENTIAL_VARIABLES}}
    env |= {"KAGGLE_API_ENDPOINT": server.url, "KAGGLE_CONFIG_DIR": str(config), **(extra_env or {})}
    copy = workdir / Path(notebook).name
    shutil.copy(notebook, copy)
    executed_path = workdir / "executed.ipynb"
    # --timeout is per cell and only bounds a hang: the first candle build takes minutes.
    run = subprocess.run(
        [sys.executable, str(runner), str(copy), "-o", str(executed_path), "--timeout", "2400"],
        env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-4000:]
    return nbformat.read(executed_path, as_version=4).cells


def test_the_training_notebook_learns_survives_a_crash_resumes_and_submits(tmp_path):
    server = FakeKaggle().start()
    try:
        lasting_cache = os.environ.get("FERROLAB_TEST_LASTING_BUILD_CACHE")
        extra_env = {"FERROLAB_BUILD_CACHE_DIR": lasting_cache} if lasting_cache else {}
        cells = run_training(NOTEBOOK, tmp_path, server, extra_env)
        check_training_run(cells, tmp_path / "data", server.submissions.get("digits", []))
    finally:
        server.stop()
