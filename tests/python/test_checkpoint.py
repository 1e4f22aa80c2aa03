"""%checkpoint through real kernels: save, crash, restore (same kernel and a
fresh one elsewhere), a kill at every commit step, a full disk, corruption,
retention, auto-saves at cell boundaries, the in-cell macro, and the lost-state
message. Validity is re-checked here in Python from MANIFEST.json and the
files' SHA-256, independently of the kernel's own check."""

import hashlib
import json
import os
import queue
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import Kernel, listening_port

DEFINITIONS = """:dep serde = { version = "1", features = ["derive"] }
use std::collections::HashMap;
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Model { weights: Vec<f32>, name: String, epoch: u32 }
struct Bad;
impl serde::Serialize for Bad {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> { panic!("bad serialize") }
}
"""

VARIABLES = """let model = Model { weights: (0..1000).map(|i| i as f32 * 0.25).collect(), name: "tiny".into(), epoch: 7 };
let weights: Vec<f32> = vec![0.5, -1.25, 3.0];
let mut table: HashMap<String, i64> = HashMap::new();
table.insert("alpha".into(), 1);
table.insert("beta".into(), -2);
let count = 42u64;
let title = String::from("héllo ✓");
let file = std::fs::File::open("/etc/hostname").unwrap();
let callback: Box<dyn Fn() -> i32> = Box::new(|| 7);
let shared = std::rc::Rc::new(5);
let bad = Bad;"""

SETUP = DEFINITIONS + VARIABLES
MODULE_VARIABLES = "model,weights,table,count,title,file,callback,shared,bad"

VALUES = 'format!("{:?}|{:?}|{:?}|{}|{:?}", model, weights, { let mut t: Vec<_> = table.iter().collect(); t.sort(); t }, count, title)'


def ok(outcome):
    error = outcome.error()
    assert outcome.status == "ok", error and "\n".join(error["traceback"])
    return outcome


def valid_checkpoints(root):
    """Names of checkpoints whose manifest parses and whose every file matches."""
    valid = []
    for path in sorted(Path(root).glob("ckpt-*")):
        try:
            manifest = json.loads((path / "MANIFEST.json").read_text())
        except (OSError, ValueError):
            continue
        good = all(
            (path / f["path"]).is_file()
            and (path / f["path"]).stat().st_size == f["size"]
            and hashlib.sha256((path / f["path"]).read_bytes()).hexdigest() == f["sha256"]
            for f in manifest["files"]
        )
        if good and manifest["name"] == path.name:
            valid.append(path.name)
    return valid


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("checkpoint-work")


# An empty FERROLAB_CHECKPOINT_DIR (not a missing one): an inherited value must not redirect the tests.
NO_INHERITED_DIR = {"FERROLAB_CHECKPOINT_DIR": ""}


@pytest.fixture(autouse=True)
def auto_off_after_each_test(request):
    """A test that turned `%checkpoint auto` on and then failed must not leave it on
    for the next test (its saves would go to that test's folder)."""
    yield
    if "ck" in request.fixturenames:
        request.getfixturevalue("ck").execute("%checkpoint auto off")


@pytest.fixture(scope="module")
def ck(work, s3, tmp_path_factory):
    # The checkpoint key, spool and download cache live in a scratch home of their own.
    xdg = tmp_path_factory.mktemp("checkpoint-xdg")
    env = {**NO_INHERITED_DIR, "XDG_CONFIG_HOME": str(xdg / "config"),
           "XDG_CACHE_HOME": str(xdg / "cache"), **s3.env}
    running = Kernel(cwd=work, env=env)
    running.cwd = work
    ok(running.execute(SETUP, timeout=600))
    yield running
    running.shutdown()


@pytest.fixture(scope="module")
def first(ck, work):
    """The module's first checkpoint, `first`, in ./checkpoints: every variable, a metric and a file."""
    (work / "data").mkdir(exist_ok=True)
    (work / "data" / "notes.txt").write_text("keep me\n")
    reset(ck)
    before = ok(ck.execute(VALUES)).result_text()
    saved = ok(ck.execute(f"%cd -q {work}\n%checkpoint save first --metric loss=0.5 --files data/notes.txt"))
    return SimpleNamespace(text=saved.result_text(), before=before)


def save_here(kernel):
    """Saves the module's variables into ./checkpoints; returns the checkpoint's name."""
    saved = ok(kernel.execute(f"%cd -q {kernel.cwd}\n%checkpoint save --vars {MODULE_VARIABLES}")).result_text()
    return re.search(r"Saved (ckpt-\S+) to", saved).group(1)


def test_save_commits_lists_skips_and_keeps_every_variable_usable(ck, work, first):
    before = first.before
    text = first.text
    assert "Saved ckpt-000001-first" in text
    assert "5 variables saved" in text, text
    for skipped in ("file: std::fs::File", "callback: Box<dyn Fn() -> i32>", "shared: std::rc::Rc<i32>"):
        assert f"skipped {skipped}" in text, text
    assert "FAILED bad: Bad — its Serialize implementation panicked: bad serialize" in text
    # Every variable, the skipped and the failed ones too, is still there.
    assert ok(ck.execute(VALUES)).result_text() == before
    assert ok(ck.execute("callback() + *shared + { let _ = &file; let _ = &bad; 0 }")).result_text() == "12"

    root = work / "checkpoints"
    assert valid_checkpoints(root) == ["ckpt-000001-first"]
    checkpoint = root / "ckpt-000001-first"
    manifest = json.loads((checkpoint / "MANIFEST.json").read_text())
    listed = {f["path"] for f in manifest["files"]}
    assert {"vars/model.msgpack", "vars/weights.msgpack", "session/deps.txt", "session/items.rs",
            "session/journal.jsonl"} <= listed
    assert (checkpoint / "files").is_dir() and "keep me\n" in [
        p.read_text() for p in (checkpoint / "files").iterdir()]
    assert "serde" in (checkpoint / "session" / "deps.txt").read_text()
    assert "struct Model" in (checkpoint / "session" / "items.rs").read_text()
    assert manifest["environment"]["rustc"][0].isdigit() and manifest["environment"]["ferrolab"]
    assert manifest["metrics"] == {"loss": 0.5}
    assert not list(root.glob(".tmp-*"))

    table = ok(ck.execute("%checkpoint list"))
    html = table.of_type("execute_result")[-1]["data"]["text/html"]
    assert "ckpt-000001-first" in table.result_text() and "loss=0.5" in table.result_text()
    assert "<table>" in html
    status = ok(ck.execute("%checkpoint status")).result_text()
    assert "Last good checkpoint: ckpt-000001-first" in status
    assert "NOT covered:" in status and "callback" in status and "bad: Bad" not in status.split("Covered:")[0]


def test_child_crash_names_the_checkpoint_and_restore_brings_values_back(ck):
    reset(ck)
    name = save_here(ck)
    before = ok(ck.execute(VALUES)).result_text()
    crashed = ck.execute("std::process::abort();")
    error = crashed.error()
    assert error["ename"] == "RuntimeCrashed"
    hint = error["traceback"][-1]
    assert name in hint and "%checkpoint restore" in hint and "model" in hint
    assert ck.execute("count").error() is not None
    restored = ok(ck.execute("%checkpoint restore")).result_text()
    assert "restored 5" in restored, restored
    assert "skipped callback" in restored and "skipped bad" in restored
    assert ok(ck.execute(VALUES)).result_text() == before
    # Put back what the checkpoint could not hold, for the tests that follow.
    ok(ck.execute('let file = std::fs::File::open("/etc/hostname").unwrap();\nlet shared = std::rc::Rc::new(5);'))


def test_interrupt_that_loses_variables_points_at_the_checkpoint(ck):
    reset(ck)
    save_here(ck)
    msg_id = ck.client.execute('println!("spinning");\nloop { std::hint::spin_loop(); }')
    wait_for_output(ck, msg_id, "spinning")
    ck.manager.interrupt_kernel()
    reply = ck.client.get_shell_msg(timeout=60)
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["content"]["ename"] == "Interrupted"
    assert "%checkpoint restore" in reply["content"]["traceback"][-1]
    ok(ck.execute("%checkpoint restore --vars count,weights"))
    assert ok(ck.execute("count")).result_text() == "42"
    ok(ck.execute("%checkpoint restore"))


def test_fresh_kernel_in_another_directory_restores_and_a_changed_type_fails_alone(ck, work, first, tmp_path):
    before = first.before
    fresh = Kernel(cwd=tmp_path, env=NO_INHERITED_DIR)
    try:
        ok(fresh.execute("let x = 1;"))
        lost = fresh.execute("std::process::abort();").error()
        assert "No checkpoint in" in lost["traceback"][-1]
        restored = ok(fresh.execute(f"%checkpoint restore first --dir {work / 'checkpoints'}", timeout=600))
        text = restored.result_text()
        assert "definitions replayed: Bad, Model" in text and "dependencies: :dep serde" in text
        assert ok(fresh.execute(VALUES)).result_text() == before
        assert (tmp_path / "data" / "notes.txt").read_text() == "keep me\n"
        assert ok(fresh.execute("model.weights.iter().sum::<f32>()")).result_text() == "124875.0"
    finally:
        fresh.shutdown()
    changed = Kernel(cwd=tmp_path, env=NO_INHERITED_DIR)
    try:
        ok(changed.execute(':dep serde = { version = "1", features = ["derive"] }\n'
                           '#[derive(Debug, serde::Deserialize)] struct Model { other: u8 }', timeout=600))
        failed = changed.execute(f"%checkpoint restore first --dir {work / 'checkpoints'}")
        error = failed.error()
        assert error["ename"] == "RestoreIncomplete" and "model" in error["evalue"]
        assert any("restored 4" in line for line in error["traceback"])
        assert ok(changed.execute("weights")).result_text() == "[0.5, -1.25, 3.0]"
        assert ok(changed.execute("title")).result_text() == '"héllo ✓"'
    finally:
        changed.shutdown()


STEPS_BEFORE_RENAME = ["files-synced", "manifest-temp", "manifest-renamed"]
STEPS_AFTER_RENAME = ["dir-renamed", "committed", "retention"]


def test_kill_at_every_commit_step_keeps_the_last_good_checkpoint(ck, work, tmp_path):
    root = tmp_path / "cp"
    ok(ck.execute(f"%checkpoint save --dir {root} --vars count"))
    baseline = valid_checkpoints(root)
    assert len(baseline) == 1
    (tmp_path / "extra.txt").write_text("x" * 10000)
    for step in STEPS_BEFORE_RENAME + STEPS_AFTER_RENAME:
        doomed = Kernel(cwd=tmp_path, env={"FERROLAB_CHECKPOINT_CRASH_AT": step})
        try:
            doomed.client.execute(f"%checkpoint save --dir {root} --files extra.txt")
            deadline = time.monotonic() + 30
            while doomed.manager.is_alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not doomed.manager.is_alive(), f"the crash hook at {step} did not fire"
        finally:
            doomed.shutdown()
        valid = valid_checkpoints(root)
        names = sorted(p.name for p in root.glob("ckpt-*"))
        assert names == valid, f"after a kill at {step} an invalid checkpoint is listed: {names}"
        if step in STEPS_BEFORE_RENAME:
            assert list(root.glob(".tmp-ckpt-*")), f"the save killed at {step} left no staging dir"
            assert valid[-1] == baseline[-1], step
            latest = ok(ck.execute(f"%checkpoint restore latest --dir {root}")).result_text()
            assert f"Restored from {baseline[-1]}" in latest and "restored 1" in latest
        else:
            assert len(valid) == len(baseline) + 1, step
            baseline = valid
    ok(ck.execute(f"%checkpoint save --dir {root} --vars count"))
    assert not list(root.glob(".tmp-*")), "the next save sweeps staging dirs of dead kernels"
    assert ok(ck.execute("count")).result_text() == "42"


def test_full_disk_fails_cleanly_and_keeps_earlier_checkpoints(ck, tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a 1 MB tmpfs here ({result.stderr.strip()}); run as root to test a full disk")
    try:
        ok(ck.execute(f"%checkpoint save --dir {mount} --vars count"))
        before = valid_checkpoints(mount)
        ok(ck.execute("let big: Vec<f32> = vec![1.5; 1_000_000];"))
        full = ck.execute(f"%checkpoint save --dir {mount}")
        error = full.error()
        assert error is not None, full.result_text()
        assert "disk is full" in error["evalue"] or "No space left" in error["evalue"], error["evalue"]
        assert "earlier checkpoints are intact" in error["evalue"]
        assert valid_checkpoints(mount) == before
        assert sorted(p.name for p in mount.iterdir()) == before, "nothing half-written may remain"
        assert ok(ck.execute("big.len()")).result_text() == "1000000"
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_flipped_byte_fails_verify_and_restore_falls_back(ck, tmp_path):
    root = tmp_path / "cp"
    ok(ck.execute(f"%checkpoint save --dir {root} --vars count,weights"))
    ok(ck.execute(f"%checkpoint save --dir {root} --vars count,weights"))
    newest = root / "ckpt-000002" / "vars" / "weights.msgpack"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x01
    newest.write_bytes(bytes(data))
    bad = ck.execute(f"%checkpoint verify --dir {root}").error()
    assert bad["ename"] == "CheckpointInvalid" and "SHA-256" in bad["evalue"]
    assert "valid" in ok(ck.execute(f"%checkpoint verify ckpt-000001 --dir {root}")).result_text()
    listing = ok(ck.execute(f"%checkpoint list --dir {root}"))
    assert "ckpt-000002 is not a valid checkpoint" in listing.stream_text("stderr")
    restored = ok(ck.execute(f"%checkpoint restore latest --dir {root}")).result_text()
    assert "Restored from ckpt-000001" in restored and "skipped ckpt-000002" in restored


def test_retention_keeps_newest_and_best(ck, tmp_path):
    root = tmp_path / "cp"
    ok(ck.execute(f"%checkpoint auto --every 1h --keep 2 --keep-best loss:min:1 --dir {root}"))
    # Turning auto on may save a baseline at once (if none was saved lately).
    first = len(valid_checkpoints(root)) + 1
    for loss in (0.1, 0.5, 0.4, 0.3):
        ok(ck.execute(f"%checkpoint save --vars count --metric loss={loss}"))
    names = [f"ckpt-{n:06}" for n in range(first, first + 4)]
    # The newest two, plus the best by loss; the baseline and 0.5 are gone.
    assert valid_checkpoints(root) == [names[0], names[2], names[3]]
    best = ok(ck.execute("%checkpoint restore best")).result_text()
    assert f"Restored from {names[0]}" in best
    ok(ck.execute("%checkpoint auto off"))


def test_auto_saves_only_at_cell_boundaries(ck, tmp_path):
    root = tmp_path / "cp"
    ok(ck.execute(f"%checkpoint auto --every 1s --dir {root}"))
    # Turning auto on saves a baseline at once when the last save is over a second old.
    baseline = len(valid_checkpoints(root))
    time.sleep(1.2)
    ok(ck.execute("1 + 1"))
    assert len(valid_checkpoints(root)) == baseline + 1
    seen_during = []
    # The watched window is the cell's own: from its first line to its second, while its
    # code runs (it runs a second more after that, so the window closes before any save
    # at the cell's end could start).
    msg_id = ck.client.execute('println!("cell started"); '
                               "std::thread::sleep(std::time::Duration::from_secs(3)); "
                               'println!("cell ending"); '
                               "std::thread::sleep(std::time::Duration::from_secs(1));")
    wait_for_output(ck, msg_id, "cell started")
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            seen_during.append(len(list(root.glob("ckpt-*"))))
            time.sleep(0.1)  # sampling interval

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        wait_for_output(ck, msg_id, "cell ending")
    finally:
        stop.set()
        watcher.join()
    reply = ck.client.get_shell_msg(timeout=60)
    assert reply["parent_header"]["msg_id"] == msg_id
    assert set(seen_during) == {baseline + 1}, "a checkpoint appeared while the cell ran"
    assert seen_during, "the watcher did not run"
    deadline = time.monotonic() + 10
    while len(valid_checkpoints(root)) < baseline + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(valid_checkpoints(root)) == baseline + 2
    manifest = json.loads((root / valid_checkpoints(root)[-1] / "MANIFEST.json").read_text())
    assert manifest["origin"] == "auto"
    failing = ck.execute("let nope: u8 = \"text\";")
    assert failing.error() is not None
    time.sleep(1.2)
    ck.execute("%checkpoint auto off")
    assert len(valid_checkpoints(root)) == baseline + 2, "a failed cell or `auto off` must not save"
    assert all(json.loads((root / n / "MANIFEST.json").read_text())["origin"] == "auto"
               for n in valid_checkpoints(root))


def test_in_cell_macro_survives_a_crash_mid_loop(ck, tmp_path):
    root = tmp_path / "cp"
    ok(ck.execute(f"%checkpoint auto --every 1h --dir {root}"))
    limited = ok(ck.execute("(0..3).map(|e| ferrolab::checkpoint!(e)).collect::<Vec<bool>>()"))
    assert limited.result_text() == "[false, false, false]", "rate limit: a checkpoint was just saved"
    crashed = ck.execute("""let mut state = vec![0.0f32; 4];
for epoch in 0..10u32 {
    for w in state.iter_mut() { *w += 1.0; }
    ferrolab::checkpoint_now!(epoch, state; loss = 1.0 / (epoch as f32 + 1.0));
    if epoch == 3 { std::process::abort(); }
}""")
    assert crashed.error()["ename"] == "RuntimeCrashed"
    assert "from inside the cell" in crashed.stream_text("stderr")
    restored = ok(ck.execute("%checkpoint restore")).result_text()
    assert "epoch: u32" in restored and "state: Vec<f32>" in restored, restored
    assert ok(ck.execute("(epoch, state.clone())")).result_text() == "(3, [4.0, 4.0, 4.0, 4.0])"
    ok(ck.execute("%checkpoint auto off"))


def reset(kernel):
    """The module's variables with their first values (a test that crashed the runtime lost them)."""
    ok(kernel.execute(VARIABLES))


@pytest.fixture(scope="module")
def saved(ck, work, tmp_path_factory):
    """A checkpoint of every module variable and one file, made once, for the tests that
    tamper with copies of it."""
    root = tmp_path_factory.mktemp("saved")
    (work / "data").mkdir(exist_ok=True)
    (work / "data" / "notes.txt").write_text("keep me\n")
    reset(ck)
    # Only the module's variables: other tests may have left variables of their own in the kernel.
    ok(ck.execute(f"%checkpoint save first --dir {root} --files data/notes.txt --vars {MODULE_VARIABLES}"))
    return root / "ckpt-000001-first"


def rewrite_manifest(checkpoint, change):
    """Edits MANIFEST.json as an attacker with write access would (hashes kept consistent)."""
    path = checkpoint / "MANIFEST.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    for entry in manifest["files"]:
        data = (checkpoint / entry["path"]).read_bytes()
        entry["size"] = len(data)
        entry["sha256"] = hashlib.sha256(data).hexdigest()
    path.write_text(json.dumps(manifest))


def foreign_copy(source, root, name="ckpt-000001", owner=4242):
    """A copy of `source` that belongs to another user, as a shared drive or a downloaded archive would."""
    copy = root / name
    shutil.copytree(source, copy)
    rewrite_manifest(copy, lambda m: m.update(name=name))
    for path in [copy, *copy.rglob("*")]:
        os.chown(path, owner, owner, follow_symlinks=False)
    return copy


def evil_crate(folder, marker):
    """A path crate whose build script leaves `marker`: code that runs at `:dep` time."""
    (folder / "src").mkdir(parents=True)
    (folder / "Cargo.toml").write_text('[package]\nname = "evil"\nversion = "0.1.0"\nedition = "2021"\nbuild = "build.rs"\n')
    (folder / "src" / "lib.rs").write_text("pub fn hello() {}\n")
    (folder / "build.rs").write_text(f"fn main() {{ std::fs::write({json.dumps(str(marker))}, \"ran\").unwrap(); }}\n")


def test_a_checkpoint_from_another_user_shows_its_code_and_asks_first(ck, saved, tmp_path):
    reset(ck)
    marker = tmp_path / "build-script-ran"
    evil_crate(tmp_path / "evil", marker)
    root = tmp_path / "cp"
    copy = foreign_copy(saved, root)
    # The attacker adds a crate whose build script runs, and says the checkpoint is ours.
    journal = copy / "session" / "journal.jsonl"
    journal.write_text(journal.read_text() + json.dumps({"code": f':dep evil = {{ path = "{tmp_path / "evil"}" }}', "unix_time": 1}) + "\n")
    host = open("/proc/sys/kernel/hostname").read().strip()
    rewrite_manifest(copy, lambda m: m["environment"].update(host=host, uid=str(os.getuid())))
    for path in [copy, *copy.rglob("*")]:
        os.chown(path, 4242, 4242, follow_symlinks=False)
    refused = ck.execute(f"%checkpoint restore --dir {root}")
    error = refused.error()
    assert error is not None and "--yes" in error["evalue"] and "uid 4242" in error["evalue"], error
    shown = refused.stream_text("stderr")
    assert ":dep evil" in shown and "not your own checkpoint" in shown
    declined = ck.execute(f"%checkpoint restore --dir {root}", allow_stdin=True, answers=["n"])
    assert "cancelled" in declined.error()["evalue"]
    assert declined.inputs and "[y/N]" in declined.inputs[0]["prompt"]
    assert not marker.exists(), "the foreign checkpoint's build script ran without a yes"
    assert ok(ck.execute("count")).result_text() == "42"


def test_forged_origin_fields_do_not_make_a_checkpoint_foreign_or_trusted(ck, saved, tmp_path):
    reset(ck)
    root = tmp_path / "cp"
    copy = root / "ckpt-000001"
    shutil.copytree(saved, copy)
    # Our own checkpoint, with the manifest claiming another machine: origin comes from the files.
    rewrite_manifest(copy, lambda m: (m.update(name="ckpt-000001"), m["environment"].update(host="elsewhere", uid="999")))
    restored = ok(ck.execute(f"%checkpoint restore --dir {root}"))
    assert "restored 5" in restored.result_text() and not restored.inputs


def test_tampered_names_types_and_paths_are_refused_and_nothing_runs(ck, saved, tmp_path):
    reset(ck)
    marker = tmp_path / "pwned"
    source = saved
    write_marker = f'std::fs::write({json.dumps(str(marker))}, "").unwrap()'
    tampers = {
        "name": lambda m: m["variables"][0].update(name=f"count: u64 = {{ {write_marker}; 1 }}; let mut count2"),
        "type": lambda m: next(v for v in m["variables"] if v["name"] == "count").update(type=f"u64 = {{ {write_marker}; 1 }}; let mut other: u64"),
        "file": lambda m: m["variables"][0].update(file="../../../outside.msgpack"),
        "source": lambda m: m["user_files"][0].update(stored="/etc/hostname"),
        "target": lambda m: m["user_files"][0].update(original="../../anywhere/notes.txt"),
    }
    for label, tamper in tampers.items():
        root = tmp_path / label
        copy = root / "ckpt-000001"
        shutil.copytree(source, copy)
        rewrite_manifest(copy, lambda m: (m.update(name="ckpt-000001"), tamper(m)))
        outcome = ck.execute(f"%checkpoint restore ckpt-000001 --dir {root} --yes")
        error = outcome.error()
        assert error is not None, (label, outcome.result_text())
        text = error["evalue"] + " ".join(error["traceback"])
        assert "not valid" in text or "not a plain Rust type" in text, (label, text)
        assert not marker.exists(), f"tampered {label}: code from the manifest ran"
        listing = ck.execute(f"%checkpoint list --dir {root}")
        assert "not a valid checkpoint" in listing.stream_text("stderr") or label == "type", label
    assert not (tmp_path.parent / "anywhere").exists()
    assert ok(ck.execute("count")).result_text() == "42"


def test_a_type_that_is_not_a_type_fails_alone_and_runs_nothing(ck, saved, tmp_path):
    reset(ck)
    marker = tmp_path / "pwned"
    root = tmp_path / "cp"
    copy = root / "ckpt-000001"
    shutil.copytree(saved, copy)
    evil_type = f'[u8; {{ std::fs::write({json.dumps(str(marker))}, "").unwrap(); 3 }}]'

    def tamper(manifest):
        manifest["name"] = "ckpt-000001"
        for variable in manifest["variables"]:
            if variable["name"] == "count":
                variable["type"] = evil_type

    rewrite_manifest(copy, tamper)
    outcome = ck.execute(f"%checkpoint restore --dir {root}")
    error = outcome.error()
    assert error["ename"] == "RestoreIncomplete" and "count" in error["evalue"]
    assert any("not a plain Rust type" in line for line in error["traceback"])
    assert any("restored 4" in line for line in error["traceback"])
    assert not marker.exists()


def test_a_failed_restore_keeps_the_value_the_user_had(ck, tmp_path):
    reset(ck)
    root = tmp_path / "cp"
    ok(ck.execute(f"%checkpoint save --dir {root} --vars count,title"))
    checkpoint = root / "ckpt-000001"
    # The saved bytes of `count` now hold a string: they no longer decode as u64.
    (checkpoint / "vars" / "count.msgpack").write_bytes(b"\xa5hello")
    rewrite_manifest(checkpoint, lambda m: None)
    ok(ck.execute("let count = 43u64;"))
    outcome = ck.execute(f"%checkpoint restore --dir {root}")
    error = outcome.error()
    assert error["ename"] == "RestoreIncomplete" and "count" in error["evalue"]
    assert any("left as it was" in line for line in error["traceback"])
    assert ok(ck.execute("count")).result_text() == "43", "a failed restore destroyed the user's value"
    assert ok(ck.execute("title")).result_text() == '"héllo ✓"'
    ok(ck.execute("let count = 42u64;"))


def test_restored_files_never_replace_different_ones_silently(ck, tmp_path):
    reset(ck)
    (tmp_path / "data").mkdir()
    notes = tmp_path / "data" / "notes.txt"
    notes.write_text("saved version\n")
    ok(ck.execute(f"%cd {tmp_path}"))
    try:
        ok(ck.execute("%checkpoint save --dir cp --vars count --files 'data/*.txt'"))
        notes.write_text("newer work\n")
        kept = ok(ck.execute("%checkpoint restore --dir cp")).result_text()
        assert "not restored: it exists with other contents" in kept and "--force" in kept
        assert notes.read_text() == "newer work\n"
        declined = ok(ck.execute("%checkpoint restore --dir cp", allow_stdin=True, answers=["n"]))
        assert "data/notes.txt" in declined.inputs[0]["prompt"] and notes.read_text() == "newer work\n"
        ok(ck.execute("%checkpoint restore --dir cp", allow_stdin=True, answers=["y"]))
        assert notes.read_text() == "saved version\n"
        notes.write_text("newer again\n")
        ok(ck.execute("%checkpoint restore --dir cp --force"))
        assert notes.read_text() == "saved version\n"
        unchanged = ok(ck.execute("%checkpoint restore --dir cp")).result_text()
        assert "data/notes.txt (unchanged)" in unchanged
    finally:
        ok(ck.execute(f"%cd {ck.cwd}"))


def test_names_resolve_as_typed(ck, tmp_path):
    reset(ck)
    root = tmp_path / "cp"
    ok(ck.execute(f"%checkpoint save first --dir {root} --vars count"))
    ok(ck.execute(f"%checkpoint save --dir {root} --vars count"))
    ok(ck.execute(f"%checkpoint save first --dir {root} --vars count,weights"))
    assert valid_checkpoints(root) == ["ckpt-000001-first", "ckpt-000002", "ckpt-000003-first"]
    assert "ckpt-000003-first is valid" in ok(ck.execute(f"%checkpoint verify first --dir {root}")).result_text()
    newest = ok(ck.execute(f"%checkpoint restore first --dir {root}")).result_text()
    assert "Restored from ckpt-000003-first" in newest and "2 checkpoints are named `first`" in newest
    for typed, expected in [("1", "ckpt-000001-first"), ("ckpt-000002", "ckpt-000002"), ("ckpt-000001-first", "ckpt-000001-first")]:
        assert f"Restored from {expected}" in ok(ck.execute(f"%checkpoint restore {typed} --dir {root}")).result_text()
        assert f"{expected} is valid" in ok(ck.execute(f"%checkpoint verify {typed} --dir {root}")).result_text()
    table = ok(ck.execute(f"%checkpoint list --dir {root}")).result_text()
    assert "ckpt-000001-first" in table and "ckpt-000003-first" in table
    assert "Removed ckpt-000003-first" in ok(ck.execute(f"%checkpoint rm first --dir {root}")).result_text()
    assert "Restored from ckpt-000001-first" in ok(ck.execute(f"%checkpoint restore first --dir {root}")).result_text()
    missing = ck.execute(f"%checkpoint restore second --dir {root}").error()
    assert "no checkpoint named `second`" in missing["evalue"] and "ckpt-000001-first" in missing["evalue"]
    for reserved in ["3", "latest", "best"]:
        assert ck.execute(f"%checkpoint save {reserved} --dir {root}").error()["ename"] == "UsageError"


def test_checkpoints_are_private(ck, tmp_path):
    reset(ck)
    root = tmp_path / "cp"
    ok(ck.execute(f"%checkpoint save --dir {root} --vars count"))
    checkpoint = root / "ckpt-000001"
    for path in [root, checkpoint, *checkpoint.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path} has mode {mode:o}"


def test_hashing_refuses_symlinks_and_stops_on_interrupt(ck, tmp_path):
    reset(ck)
    root = tmp_path / "cp"
    ok(ck.execute(f"%checkpoint save --dir {root} --vars count,weights"))
    data = root / "ckpt-000001" / "vars" / "weights.msgpack"
    data.unlink()
    data.symlink_to("/dev/zero")
    for command in ("list", "verify", "restore"):
        outcome = ck.execute(f"%checkpoint {command} --dir {root}", timeout=60)
        assert "not a regular file" in json.dumps(outcome.outputs), (command, outcome.outputs)
    # A listed file of 64 GiB (sparse) takes minutes to hash: an interrupt stops it.
    ok(ck.execute(f"%checkpoint save --dir {root} --vars count"))
    big = root / "ckpt-000002" / "vars" / "count.msgpack"
    with open(big, "r+b") as handle:
        handle.truncate(64 << 30)
    manifest_path = root / "ckpt-000002" / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text())
    for entry in manifest["files"]:
        if entry["path"] == "vars/count.msgpack":
            entry["size"] = 64 << 30
    manifest_path.write_text(json.dumps(manifest))
    msg_id = ck.client.execute(f"%checkpoint verify ckpt-000002 --dir {root}")
    wait_until_busy_on(ck, msg_id)
    ck.manager.interrupt_kernel()
    reply = ck.client.get_shell_msg(timeout=60)
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "Interrupted"
    assert ok(ck.execute("count")).result_text() == "42"


def wait_for_output(kernel, msg_id, text, timeout=120):
    """Blocks until the cell `msg_id` has printed `text` on stdout."""
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            message = kernel.client.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if message["parent_header"].get("msg_id") == msg_id and message["msg_type"] == "stream":
            seen += message["content"]["text"]
            if text in seen:
                return
    raise TimeoutError(f"the cell never printed {text!r}")


def wait_until_busy_on(kernel, msg_id, timeout=30):
    """Blocks until IOPub says the kernel is busy with `msg_id`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            message = kernel.client.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if (message["parent_header"].get("msg_id") == msg_id and message["msg_type"] == "status"
                and message["content"]["execution_state"] == "busy"):
            return
    raise TimeoutError("the kernel never went busy")


def test_weights_files_go_with_a_checkpoint_from_inside_a_loop(ck, tmp_path):
    reset(ck)
    ok(ck.execute(f"%cd {tmp_path}"))
    try:
        ok(ck.execute("%checkpoint auto --every 1h --dir cp"))
        ok(ck.execute("""for epoch in 0..3u32 {
    std::fs::write("model.safetensors", format!("weights after epoch {epoch}")).unwrap();
    ferrolab::checkpoint_now!(epoch; loss = 1.0 / (epoch as f64 + 1.0); files = ["model.safetensors"]);
}"""))
        (tmp_path / "model.safetensors").unlink()
        restored = ok(ck.execute("%checkpoint restore latest")).result_text()
        assert "model.safetensors" in restored
        assert (tmp_path / "model.safetensors").read_text() == "weights after epoch 2"
        missing = ck.execute('ferrolab::checkpoint_now!(count; files = ["nope.safetensors"])')
        assert ok(missing).result_text() == "false" and "nope.safetensors" in missing.stream_text("stderr")
        ok(ck.execute("%checkpoint auto off"))
    finally:
        ok(ck.execute(f"%cd {ck.cwd}"))


# ---- object storage: a real S3-compatible server (moto) on loopback ----

class CuttingProxy:
    """TCP proxy in front of the S3 server: records request lines in order and, when
    `cut_after` is set, drops every connection after that many request bytes."""

    REQUEST = re.compile(rb"(?m)^(GET|PUT|POST|DELETE|HEAD) (\S+) HTTP/1\.1\r$")

    def __init__(self, target):
        self.target = target
        self.cut_after = None
        self.requests = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        limit = self.cut_after

        def back():
            try:
                while data := upstream.recv(65536):
                    client.sendall(data)
            except OSError:
                pass
            finally:
                client.close()

        threading.Thread(target=back, daemon=True).start()
        sent = 0
        try:
            while data := client.recv(65536):
                for match in self.REQUEST.finditer(data):
                    self.requests.append((match.group(1).decode(), match.group(2).decode()))
                if limit is not None and sent + len(data) > limit:
                    upstream.sendall(data[: max(0, limit - sent)])
                    break
                upstream.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for end in (client, upstream):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                end.close()

    def puts(self, prefix):
        return [path for method, path in self.requests if method == "PUT" and prefix in path]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto with IAM authentication on: only the trainer's key (created through three
    unauthenticated calls) is accepted; a bucket `ckpts`."""
    import boto3

    log = tmp_path_factory.mktemp("moto") / "moto.log"
    # Port 0: the server takes a free port and the test reads which from the OS.
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"},
        stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    number = listening_port(server, describe=log.read_text)
    direct = f"http://127.0.0.1:{number}"
    anonymous = dict(endpoint_url=direct, region_name="us-east-1", aws_access_key_id="setup", aws_secret_access_key="setup")
    iam = boto3.client("iam", **anonymous)
    iam.create_user(UserName="trainer")
    key = iam.create_access_key(UserName="trainer")["AccessKey"]
    iam.put_user_policy(UserName="trainer", PolicyName="s3", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    client = boto3.client("s3", endpoint_url=direct, region_name="us-east-1",
                          aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
    client.create_bucket(Bucket="ckpts")
    proxy = CuttingProxy(("127.0.0.1", number))
    yield SimpleNamespace(client=client, proxy=proxy, key_id=key["AccessKeyId"], secret=key["SecretAccessKey"],
                          env={"AWS_ENDPOINT_URL": proxy.url, "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                               "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"], "AWS_REGION": "us-east-1"})
    server.terminate()
    server.wait(timeout=30)


def s3_valid(client, prefix):
    """Checkpoint names under `prefix` whose manifest exists and whose objects match it."""
    listed = client.list_objects_v2(Bucket="ckpts", Prefix=f"{prefix}/").get("Contents", [])
    sizes = {item["Key"][len(prefix) + 1:]: item["Size"] for item in listed}
    valid = []
    for key in sorted(k for k in sizes if k.endswith("/MANIFEST.json")):
        name = key.split("/")[0]
        manifest = json.loads(client.get_object(Bucket="ckpts", Key=f"{prefix}/{key}")["Body"].read())
        good = all(sizes.get(f"{name}/{f['path']}") == f["size"]
                   and hashlib.sha256(client.get_object(Bucket="ckpts", Key=f"{prefix}/{name}/{f['path']}")["Body"].read()).hexdigest() == f["sha256"]
                   for f in manifest["files"])
        if good and manifest["name"] == name:
            valid.append(name)
    return valid


def test_s3_save_list_verify_restore_rm_and_retention(ck, s3):
    reset(ck)
    url = "s3://ckpts/run1"
    ok(ck.execute("let big: Vec<f32> = (0..6_000_000).map(|i| i as f32).collect();"))
    s3.proxy.requests.clear()
    saved = ok(ck.execute(f"%checkpoint save first --dir {url} --metric loss=0.5", timeout=300))
    assert f"Saved ckpt-000001-first to {url}" in saved.result_text(), saved.result_text()
    assert "Uploading ckpt-000001-first" in saved.stream_text("stderr"), "a long upload shows progress"
    assert s3_valid(s3.client, "run1") == ["ckpt-000001-first"]
    puts = s3.proxy.puts("/ckpts/run1/ckpt-000001-first/")
    assert puts and puts[-1].endswith("/MANIFEST.json"), "the manifest must be the last object written"
    assert any("uploadId" in p for p in puts), "a 24 MB variable goes up in parts"
    manifest = json.loads(s3.client.get_object(Bucket="ckpts", Key="run1/ckpt-000001-first/MANIFEST.json")["Body"].read())
    assert len(manifest["signature"]) == 64
    ok(ck.execute(f"%checkpoint save --dir {url} --vars count"))
    table = ok(ck.execute(f"%checkpoint list --dir {url}")).result_text()
    assert "ckpt-000001-first" in table and "ckpt-000002" in table and "loss=0.5" in table
    assert "ckpt-000001-first is valid" in ok(ck.execute(f"%checkpoint verify first --dir {url}")).result_text()
    before = ok(ck.execute(VALUES)).result_text()
    assert ck.execute("std::process::abort();").error()["ename"] == "RuntimeCrashed"
    restored = ok(ck.execute(f"%checkpoint restore first --dir {url}", timeout=300)).result_text()
    assert "Restored from ckpt-000001-first" in restored and "big: Vec<f32>" in restored
    assert ok(ck.execute(VALUES)).result_text() == before
    assert ok(ck.execute("big[5_999_999]")).result_text() == "5999999.0"
    ok(ck.execute('let file = std::fs::File::open("/etc/hostname").unwrap();\nlet shared = std::rc::Rc::new(5);\nlet big = 0u8;'))
    ok(ck.execute(f"%checkpoint auto --every 1h --keep 2 --dir {url}"))
    for _ in range(2):
        ok(ck.execute("%checkpoint save --vars count"))
    # The newest 2, and the one this kernel restored from.
    assert s3_valid(s3.client, "run1") == ["ckpt-000001-first", "ckpt-000003", "ckpt-000004"]
    ok(ck.execute("%checkpoint auto off"))
    assert "Removed ckpt-000003" in ok(ck.execute(f"%checkpoint rm 3 --dir {url}")).result_text()
    assert s3_valid(s3.client, "run1") == ["ckpt-000001-first", "ckpt-000004"]
    assert not s3.client.list_objects_v2(Bucket="ckpts", Prefix="run1/ckpt-000003/").get("KeyCount")


def test_s3_bad_credentials_missing_bucket_and_a_cut_connection_fail_cleanly(ck, s3):
    reset(ck)
    url = "s3://ckpts/run2"
    ok(ck.execute(f"%checkpoint save --dir {url} --vars count"))
    good = s3_valid(s3.client, "run2")
    assert good == ["ckpt-000001"]
    ok(ck.execute("%env AWS_SECRET_ACCESS_KEY=not-the-secret"))
    try:
        refused = ck.execute(f"%checkpoint save --dir {url} --vars count").error()
        assert refused is not None and "credentials" in refused["evalue"], refused
        assert "not-the-secret" not in json.dumps(refused)
    finally:
        ok(ck.execute(f"%env AWS_SECRET_ACCESS_KEY={s3.secret}"))
    missing = ck.execute("%checkpoint list --dir s3://no-such-bucket/x").error()
    assert missing is not None and "no-such-bucket" in missing["evalue"], missing
    # Every connection dies after 64 KB: the multipart upload of `weights_big` cannot finish.
    ok(ck.execute("let weights_big: Vec<f32> = vec![0.25; 4_000_000];"))
    s3.proxy.cut_after = 64 << 10
    try:
        cut = ck.execute(f"%checkpoint save cut --dir {url}", timeout=300).error()
        assert cut is not None and "kept on this machine" in cut["evalue"], cut
    finally:
        s3.proxy.cut_after = None
    # The save refused for bad credentials was kept and went up first; the cut one is kept.
    assert s3_valid(s3.client, "run2") == ["ckpt-000001", "ckpt-000002"], "a failed upload must leave the others as they were"
    listing = ok(ck.execute(f"%checkpoint list --dir {url}"))
    assert "not uploaded yet" in listing.stream_text("stderr")
    ok(ck.execute(f"%checkpoint save --dir {url} --vars count"))
    assert s3_valid(s3.client, "run2") == ["ckpt-000001", "ckpt-000002", "ckpt-000003-cut", "ckpt-000004"], "kept saves go up first, in order"
    ok(ck.execute("let weights_big = 0u8;"))


def test_s3_checkpoints_restore_on_another_machine_and_trust_follows_the_key(ck, s3, work, tmp_path):
    reset(ck)
    url = "s3://ckpts/run3"
    ok(ck.execute(f"%checkpoint save shared --dir {url} --vars count,title,table"))
    # Another VM: another home (no cache, no key of ours), the same bucket.
    home = tmp_path / "home"
    home.mkdir()
    env = {**s3.env, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "XDG_CONFIG_HOME": str(home / ".config"),
           "CARGO_HOME": os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo")),
           "RUSTUP_HOME": os.environ.get("RUSTUP_HOME", os.path.expanduser("~/.rustup"))}
    other = Kernel(cwd=tmp_path, env=env)
    try:
        asked = other.execute(f"%checkpoint restore shared --dir {url}", timeout=600)
        error = asked.error()
        assert error is not None and "--yes" in error["evalue"] and "checkpoint key" in error["evalue"], error
        trusted = ok(other.execute(f"%checkpoint restore shared --dir {url} --yes", timeout=600)).result_text()
        assert "Restored from ckpt-000001-shared" in trusted and "restored 3" in trusted
        assert ok(other.execute("(count, title.clone())")).result_text() == '(42, "héllo ✓")'
    finally:
        other.shutdown()


def test_s3_in_cell_checkpoints_go_up_after_a_crash(ck, s3):
    reset(ck)
    url = "s3://ckpts/run4"
    ok(ck.execute(f"%checkpoint auto --every 1h --dir {url}"))
    crashed = ck.execute("""let mut state = vec![0.0f32; 4];
for epoch in 0..10u32 {
    for w in state.iter_mut() { *w += 1.0; }
    ferrolab::checkpoint_now!(epoch, state);
    if epoch == 2 { std::process::abort(); }
}""")
    assert crashed.error()["ename"] == "RuntimeCrashed"
    assert "uploaded" in crashed.stream_text("stderr")
    names = s3_valid(s3.client, "run4")
    assert len(names) >= 3 and all(
        json.loads(s3.client.get_object(Bucket="ckpts", Key=f"run4/{n}/MANIFEST.json")["Body"].read())["origin"] == "in-cell"
        for n in names[-3:]), names
    ok(ck.execute(f"%checkpoint restore --dir {url}"))
    assert ok(ck.execute("(epoch, state.clone())")).result_text() == "(2, [3.0, 3.0, 3.0, 3.0])"
    ok(ck.execute("%checkpoint auto off"))
