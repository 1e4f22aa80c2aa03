"""The training notebook (notebooks/kaggle_train.ipynb) on a GPU, checked as `./kernel test`
checks it on the CPU.

The run uses a variant of the notebook made here: candle-core and candle-nn get their
`cuda` feature, a cell after the data is loaded asserts that the device is CUDA, and a
last cell times a training epoch on CUDA and on the CPU with the same model and data.
It trains against the fake Kaggle server's `digits` competition (scikit-learn's digits,
read from the installed package), then every claim of the CPU test is checked
(test_train_notebook.check_training_run: falling loss, >= 90% validation accuracy, the
crash, the resume from epoch 7 with the saved weights, the scored submission).

Usage: train_on_gpu.py OUT_DIR [--runner run_notebook.py] [--tests DIR] [--rehearse]
  --tests     where fake_kaggle.py and test_train_notebook.py are (default: tests/python)
  --rehearse  the CPU variant (no cuda feature, asserts the device is the CPU): what a
              machine without a GPU can check of this run: the bundle, the offline build,
              the data, the checks, the summary.

Writes OUT_DIR/kaggle_train.<cuda|cpu>.ipynb (the variant), ...executed.ipynb and
train.summary.txt (one line); exit status 0 only when every check passed.
"""

import argparse
import re
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
REPO_TESTS = HERE.parent / "python"

# The cell after the data is loaded: fails the run unless it trains where it should.
DEVICE_CHECK = """\
// This run must train on {expected}: stop here if candle did not find it.
let on_cuda = {on_cuda};
assert_eq!(device.is_cuda(), on_cuda, "expected {expected}, but candle chose {{device:?}}");
println!("device: {{device:?}}");
"""

# The last cell: time per epoch on each device, same model and data.
EPOCH_TIMES = """\
/// Seconds per epoch on `device`: a new model, one epoch to warm up, then the mean of three.
fn epoch_seconds(device: &Device) -> candle_core::Result<f64> {
    let (train_x, train_y, _, _, pixels, _) = load_data(device)?;
    let (_varmap, model, mut optimizer) = new_model(pixels, device)?;
    let (mut rng, mut step) = (1u64, 0u64);
    train_epoch(&model, &mut optimizer, &train_x, &train_y, &mut rng, &mut step)?;
    let start = std::time::Instant::now();
    for _ in 0..3 {
        train_epoch(&model, &mut optimizer, &train_x, &train_y, &mut rng, &mut step)?;
    }
    Ok(start.elapsed().as_secs_f64() / 3.0)
}
let here = epoch_seconds(&device)?;
let cpu = epoch_seconds(&Device::Cpu)?;
println!("epoch time: {:?} {:.1} ms, Cpu {:.1} ms", device, here * 1e3, cpu * 1e3);
"""

DEP_LINES = {
    ':dep candle-core = "0.11"': ':dep candle-core = { version = "0.11", features = ["cuda"] }',
    ':dep candle-nn = "0.11"': ':dep candle-nn = { version = "0.11", features = ["cuda"] }',
}


def make_variant(source: Path, target: Path, cuda: bool) -> None:
    """Writes the notebook variant: cuda features (when `cuda`), the device check and
    the epoch timing cell. Fails if the notebook no longer has the cells it edits."""
    notebook = nbformat.read(str(source), as_version=4)
    cells = notebook.cells
    deps = [c for c in cells if c.cell_type == "code" and ":dep candle-core" in c.source]
    assert len(deps) == 1, "kaggle_train.ipynb has no single :dep candle-core cell"
    if cuda:
        for plain, with_cuda in DEP_LINES.items():
            assert plain in deps[0].source, f"the :dep cell no longer says {plain}"
            deps[0].source = deps[0].source.replace(plain, with_cuda)
    loads = [i for i, c in enumerate(cells) if c.cell_type == "code"
             and "let device = Device::cuda_if_available(0)?;" in c.source and "fn load_data" in c.source]
    assert len(loads) == 1, "kaggle_train.ipynb has no single cell that defines load_data and the device"
    expected = "CUDA" if cuda else "the CPU"
    check = nbformat.v4.new_code_cell(DEVICE_CHECK.format(expected=expected, on_cuda=str(cuda).lower()))
    cells.insert(loads[0] + 1, check)
    cells.append(nbformat.v4.new_code_cell(EPOCH_TIMES))
    nbformat.write(notebook, str(target))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--runner", type=Path, default=HERE.parent / "tools" / "run_notebook.py")
    parser.add_argument("--tests", type=Path, default=REPO_TESTS)
    parser.add_argument("--notebook", type=Path, default=HERE.parent.parent / "notebooks" / "kaggle_train.ipynb")
    parser.add_argument("--rehearse", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(args.tests))
    from fake_kaggle import FakeKaggle
    from test_train_notebook import check_training_run, run_training, text_of

    cuda = not args.rehearse
    args.out.mkdir(parents=True, exist_ok=True)
    kind = "cuda" if cuda else "cpu"
    variant = args.out / f"kaggle_train.{kind}.ipynb"
    make_variant(args.notebook, variant, cuda)
    summary_path = args.out / "train.summary.txt"
    server = FakeKaggle().start()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="ferrolab-train-"))
    executed = workdir / "executed.ipynb"
    try:
        cells = run_training(variant, workdir, server, runner=args.runner)
        before, after = check_training_run(cells, workdir / "data", server.submissions.get("digits", []))
        text = "\n".join(text_of(cell) for cell in cells)
        device = re.search(r"^device: (.+)$", text, re.M)
        assert device, "the device check printed nothing"
        times = re.search(r"^epoch time: (.+)$", text, re.M)
        assert times, "the epoch timing cell printed nothing"
        score = server.submissions["digits"][0]["publicScore"]
        line = (f"PASSED | device: {device[1]} | validation accuracy {before[-1][3]:.1%} at the crash (epoch 6),"
                f" {after[-1][3]:.1%} after resuming at epoch {after[0][0]} | test score {score}"
                f" | epoch time: {times[1]} | notebook {time.monotonic() - started:.0f} s")
        status = 0
    except Exception as failure:  # noqa: BLE001 - any failure is reported in the summary line
        traceback.print_exc()
        detail = str(failure).strip().splitlines()
        line = f"FAILED | {type(failure).__name__}: {detail[-1] if detail else 'no message'}"
        status = 1
    finally:
        server.stop()
        if executed.exists():
            (args.out / f"kaggle_train.{kind}.executed.ipynb").write_bytes(executed.read_bytes())
        shutil.rmtree(workdir, ignore_errors=True)
    summary_path.write_text(line + "\n")
    print(line)
    return status


if __name__ == "__main__":
    sys.exit(main())
