"""The notebook workflow our users follow, typed in the order they would type it:
%cd, the Kaggle download, training with std types only, `%checkpoint save after50` with no
`%checkpoint init` and no `:dep` before it, the runtime dying, `%checkpoint restore after50`,
predictions, the submission; then a fresh kernel in another directory restores `after50`.

Runs against the fake Kaggle server of fake_kaggle.py (real HTTP on loopback).
"""

import os

import pytest

from conftest import Kernel
from fake_kaggle import USERS, FakeKaggle

TRAIN = r"""use std::collections::HashMap;
let rows: Vec<(f64, f64, f64, f64)> = std::fs::read_to_string("train.csv").unwrap()
    .lines().skip(1)
    .map(|line| {
        let f: Vec<&str> = line.split(',').collect();
        (f[1].parse().unwrap(), f[2].parse().unwrap(), f[4].parse::<f64>().unwrap() / 80.0, f[5].parse::<f64>().unwrap() / 100.0)
    })
    .collect();
let mut weights: Vec<f64> = vec![0.0; 4];
let mut history: HashMap<String, f64> = HashMap::new();
let mut epoch: u32 = 0;
for _ in 0..50 {
    epoch += 1;
    let mut grad = vec![0.0; 4];
    let mut loss = 0.0;
    for (y, pclass, age, fare) in &rows {
        let x = [1.0, *pclass, *age, *fare];
        let z: f64 = (0..4).map(|i| weights[i] * x[i]).sum();
        let p = 1.0 / (1.0 + (-z).exp());
        loss -= y * p.max(1e-9).ln() + (1.0 - y) * (1.0 - p).max(1e-9).ln();
        for i in 0..4 { grad[i] += (p - y) * x[i]; }
    }
    for i in 0..4 { weights[i] -= 0.5 * grad[i] / rows.len() as f64; }
    history.insert(format!("epoch{epoch}"), loss / rows.len() as f64);
}
println!("trained {epoch} epochs");"""

STATE = 'format!("{} {:?} {:.6}", epoch, weights, history["epoch50"])'

PREDICT = r"""let mut out = String::from("PassengerId,Survived\n");
for line in std::fs::read_to_string("test.csv").unwrap().lines().skip(1) {
    let f: Vec<&str> = line.split(',').collect();
    let x = [1.0, f[2].parse::<f64>().unwrap(), f[4].parse::<f64>().unwrap() / 80.0, f[5].parse::<f64>().unwrap() / 100.0];
    let z: f64 = (0..4).map(|i| weights[i] * x[i]).sum();
    out.push_str(&format!("{},{}\n", f[0], if z > 0.0 { 1 } else { 0 }));
}
std::fs::write("submission.csv", out).unwrap();"""


def ok(outcome):
    error = outcome.error()
    assert outcome.status == "ok", error and "\n".join(error["traceback"])
    return outcome


@pytest.fixture(scope="module")
def server():
    fake = FakeKaggle().start()
    yield fake
    fake.stop()


def test_the_tutorial_workflow_typed_in_order(server, tmp_path):
    config = tmp_path / "kaggle-config"
    config.mkdir()
    env = {
        "KAGGLE_API_ENDPOINT": server.url,
        "KAGGLE_CONFIG_DIR": str(config),
        "KAGGLE_USERNAME": "alice",
        "KAGGLE_KEY": USERS["alice"],
        "KAGGLE_API_TOKEN": "",
        "FERROLAB_CHECKPOINT_DIR": "",
    }
    hw = tmp_path / "hw"
    hw.mkdir()
    kernel = Kernel(cwd=tmp_path, env=env)
    try:
        ok(kernel.execute(f"%cd {hw}"))
        downloaded = ok(kernel.execute("%kaggle competitions download -c titanic -p data --unzip"))
        assert (hw / "data" / "train.csv").is_file(), downloaded.outputs
        ok(kernel.execute("%cd data"))
        assert "train.csv" in ok(kernel.execute("!ls -la")).stream_text()
        assert "trained 50 epochs" in ok(kernel.execute(TRAIN, timeout=600)).stream_text()
        before = ok(kernel.execute(STATE)).result_text()
        # The first thought of a checkpoint: no init, no :dep before it.
        saved = ok(kernel.execute("%checkpoint save after50", timeout=600)).result_text()
        assert "Saved ckpt-000001-after50" in saved and "4 variables saved" in saved, saved
        crashed = kernel.execute("std::process::abort();").error()
        assert crashed["ename"] == "RuntimeCrashed"
        assert "ckpt-000001-after50" in crashed["traceback"][-1]
        restored = ok(kernel.execute("%checkpoint restore after50")).result_text()
        assert "Restored from ckpt-000001-after50" in restored and "restored 4" in restored, restored
        assert ok(kernel.execute(STATE)).result_text() == before
        ok(kernel.execute(PREDICT))
        submitted = ok(kernel.execute('%kaggle competitions submit -c titanic -f submission.csv -m "std-only logistic regression"'))
        assert "Successfully submitted" in submitted.stream_text()
        assert "std-only logistic regression" in ok(kernel.execute("%kaggle competitions submissions -c titanic")).result_text()
    finally:
        kernel.shutdown()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    fresh = Kernel(cwd=elsewhere, env=env)
    try:
        restored = ok(fresh.execute(f"%checkpoint restore after50 --dir {hw / 'data' / 'checkpoints'}", timeout=600))
        assert "Restored from ckpt-000001-after50" in restored.result_text()
        assert ok(fresh.execute(STATE)).result_text() == before
    finally:
        fresh.shutdown()


def test_a_save_that_would_drop_session_types_keeps_what_it_can(tmp_path):
    """No :dep yet and a variable of a type defined in the session: adding the checkpoint
    runtime now would make evcxr drop it, so the save keeps the code and says so instead
    of refusing; every variable stays usable."""
    kernel = Kernel(cwd=tmp_path, env={"FERROLAB_CHECKPOINT_DIR": ""})
    try:
        ok(kernel.execute("#[derive(Debug)] struct Point { x: i32 }\nlet p = Point { x: 3 };\nlet n: u64 = 5;"))
        saved = ok(kernel.execute("%checkpoint save partial")).result_text()
        assert "Saved ckpt-000001-partial" in saved and "0 variables saved" in saved, saved
        assert "would make evcxr drop p: Point" in saved
        assert ok(kernel.execute("(p.x, n)")).result_text() == "(3, 5)"
        items = (tmp_path / "checkpoints" / "ckpt-000001-partial" / "session" / "items.rs").read_text()
        assert "struct Point" in items
    finally:
        kernel.shutdown()
