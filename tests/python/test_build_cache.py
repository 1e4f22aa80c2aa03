"""The shared build cache through real kernels.

A second kernel's `:dep` gets its crates from the cache instead of compiling
them; two kernels building the same `:dep` at once both succeed and leave a
consistent cache; the cache can be turned off; `%build_cache` and
`ferrolab cache` report the same numbers; a kernel whose cache lacks
ferrolab's checkpoint runtime compiles it in the background once idle, and a
first `:dep` that comes sooner ends that warm-up (`./kernel test` turns the
warm-up off for every other test: they count what their own builds compiled).

The two module kernels share one fresh cache directory. Each test asserts on
what its own cells did (the cache's per-kernel record of hits and misses, the
entries it holds), so the tests pass in any order and alone.
"""

import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Kernel

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "ferrolab"
ITOA = ':dep itoa = "1"\nitoa::Buffer::new().format({n}).to_string()'
SMALLVEC = (
    ':dep smallvec = "1"\n'
    "let v: smallvec::SmallVec<[u8; 4]> = smallvec::smallvec![1, 2, 3]; v.len()"
)
BUILD_TIMEOUT = 900
# ferrolab's checkpoint runtime and the crates it needs, added to a kernel's first `:dep`.
RUNTIME_CRATES = {"ferrolab_checkpoint", "serde", "rmp_serde", "jzon", "hmac_sha256"}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("build-cache") / "cache"


@pytest.fixture(scope="module")
def kernels(cache_dir):
    env = {"FERROLAB_BUILD_CACHE_DIR": str(cache_dir)}
    first = Kernel(env=env)
    second = Kernel(env=env)
    yield first, second
    first.shutdown()
    second.shutdown()


def magic(kernel, args=""):
    """%build_cache's JSON."""
    outcome = kernel.execute(f"%build_cache {args}".strip())
    assert outcome.status == "ok", outcome.error()
    return outcome.of_type("execute_result")[-1]["data"]["application/json"]


def cli(directory, *args, check=True):
    result = subprocess.run(
        [str(BINARY), "cache", *args, "--json"],
        env={**os.environ, "FERROLAB_BUILD_CACHE_DIR": str(directory)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else None


def prebuild(cache, *specs):
    """`ferrolab prebuild SPECS` into `cache`; its stdout."""
    done = subprocess.run(
        [str(BINARY), "prebuild", *specs],
        env={**os.environ, "FERROLAB_BUILD_CACHE_DIR": str(cache)},
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def run_ok(kernel, code):
    outcome = kernel.execute(code, timeout=BUILD_TIMEOUT)
    assert outcome.status == "ok", outcome.error()
    return outcome


def test_a_second_kernel_gets_the_crates_from_the_cache(kernels, cache_dir):
    first, second = kernels
    assert run_ok(first, ITOA.format(n=1234)).result_text() == '"1234"'
    stored = {entry["crate_name"] for entry in cli(cache_dir, "list")}
    assert "itoa" in stored, stored

    before = magic(second)["session"]
    assert run_ok(second, ITOA.format(n=5678)).result_text() == '"5678"'
    after = magic(second)["session"]
    # The second kernel's build restored itoa (and the rest) and compiled
    # nothing the cache had: rustc ran for none of its cacheable crates.
    assert "itoa" in after["crates_hit"], after
    assert "itoa" not in after["crates_missed"], after
    assert after["hits"] > before["hits"], (before, after)
    assert after["misses"] == before["misses"], (before, after)
    assert after["saved_ms"] > before["saved_ms"]


def test_two_kernels_building_the_same_dep_at_once(kernels, cache_dir):
    first, second = kernels
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        outcomes = list(
            pool.map(lambda k: k.execute(SMALLVEC, timeout=BUILD_TIMEOUT), (first, second))
        )
    for outcome in outcomes:
        assert outcome.status == "ok", outcome.error()
        assert outcome.result_text() == "3"
    listing = cli(cache_dir, "list")
    assert [e["crate_name"] for e in listing].count("smallvec") == 1, listing
    assert cli(cache_dir, "verify")["problems"] == []
    sessions = [magic(kernel)["session"] for kernel in (first, second)]
    both_compiled = all("smallvec" in s["crates_missed"] for s in sessions)
    print(f"both kernels compiled smallvec at once: {both_compiled}")
    # A kernel that got it from the other has it as a hit; none lost it.
    for session in sessions:
        assert "smallvec" in set(session["crates_missed"]) | set(session["crates_hit"])

    # The entry both wrote works in a third build directory: a fresh kernel.
    # This is the third kernel's first `:dep`, so ferrolab's own runtime
    # crates (for %checkpoint) come with it: from the cache too, nothing compiled.
    third = Kernel(env={"FERROLAB_BUILD_CACHE_DIR": str(cache_dir)})
    try:
        assert run_ok(third, SMALLVEC).result_text() == "3"
        session = magic(third)["session"]
        assert RUNTIME_CRATES | {"smallvec"} <= set(session["crates_hit"]), session
        assert session["crates_missed"] == [] and session["misses"] == 0, session
    finally:
        third.shutdown()


def test_off_means_nothing_is_read_or_written(kernels, cache_dir):
    _, second = kernels
    off = second.execute("%build_cache off")
    assert off.status == "ok", off.error()
    assert "off" in off.stream_text()
    try:
        assert magic(second)["state"].startswith("off")
        before = magic(second)["session"]
        run_ok(second, ':dep fnv = "1"\nfnv::FnvHashMap::<u8, u8>::default().len()')
        after = magic(second)["session"]
        assert (after["hits"], after["misses"]) == (before["hits"], before["misses"])
        assert "fnv" not in {entry["crate_name"] for entry in cli(cache_dir, "list")}
    finally:
        assert second.execute("%build_cache on").status == "ok"
    assert magic(second)["state"] == "on"


def test_a_kernel_started_with_size_zero_has_no_cache(tmp_path):
    directory = tmp_path / "cache"
    kernel = Kernel(env={"FERROLAB_BUILD_CACHE_DIR": str(directory), "FERROLAB_BUILD_CACHE_MB": "0"})
    try:
        report = kernel.execute("%build_cache")
        assert report.status == "ok"
        assert "off (FERROLAB_BUILD_CACHE_MB=0)" in report.result_text()
        # Every Rust cell is a cargo build (of the session's crate): with the
        # cache off it runs without the wrapper and leaves nothing behind.
        # (A `:dep` with the cache off is built in test_off_means_nothing_is_read_or_written.)
        assert run_ok(kernel, "let a = 40 + 2; a").result_text() == "42"
        assert not directory.exists(), "the cache directory was created"
    finally:
        kernel.shutdown()


def test_magic_and_command_line_agree_and_clean_up(kernels, cache_dir, tmp_path):
    first, _ = kernels
    run_ok(first, ITOA.format(n=1))
    shown = magic(first)
    command = cli(cache_dir, "stats")
    assert shown["dir"] == command["dir"] == str(cache_dir)
    assert shown["entries"] == command["entries"] > 0
    assert shown["bytes"] == command["bytes"] > 0
    assert shown["bytes"] <= shown["limit_bytes"]
    assert shown["totals"] == command["totals"]
    text = first.execute("%build_cache").result_text()
    assert f"Location: {cache_dir}" in text and "crate builds" in text
    listing = first.execute("%build_cache list").result_text()
    assert "itoa" in listing

    # Upkeep on copies, so the shared cache stays as the other tests left it.
    pruned_copy = tmp_path / "pruned"
    shutil.copytree(cache_dir, pruned_copy)
    entries = cli(pruned_copy, "stats")["entries"]
    report = cli(pruned_copy, "prune", "--max-mb", "0")
    assert report["evicted"] == entries and report["kept"] == 0
    assert cli(pruned_copy, "stats")["totals"]["evictions"] == entries
    cleared_copy = tmp_path / "cleared"
    shutil.copytree(cache_dir, cleared_copy)
    assert cli(cleared_copy, "clear")["removed"] == entries
    assert cli(cleared_copy, "stats")["entries"] == 0

    # A damaged entry is reported by verify (and the command fails).
    damaged = tmp_path / "damaged"
    shutil.copytree(cache_dir, damaged)
    entry = next((damaged / "entries").iterdir())
    artifact = next(p for p in entry.iterdir() if p.name not in ("manifest.json", "inputs.txt", "used"))
    artifact.chmod(0o600)
    artifact.write_bytes(b"not what was stored")
    result = cli(damaged, "verify", check=False)
    assert len(result["problems"]) == 1
    assert subprocess.run([str(BINARY), "cache", "verify"], capture_output=True,
                          env={**os.environ, "FERROLAB_BUILD_CACHE_DIR": str(damaged)}).returncode == 1


def entry_of(directory, crate_name):
    """The one published entry for `crate_name` (its directory)."""
    found = [
        entry
        for entry in (directory / "entries").iterdir()
        if json.loads((entry / "manifest.json").read_text())["crate_name"] == crate_name
    ]
    assert len(found) == 1, found
    return found[0]


def test_prebuild_fills_it_and_a_tampered_entry_is_rebuilt_not_linked(kernels, cache_dir):
    first, _ = kernels
    said = prebuild(cache_dir, "--together", 'ryu = "1"', 'hex = "0.4"')
    assert 'ryu = "1" + hex = "0.4": ready' in said, said

    # Tamper with what prebuild stored for ryu: same size, other bytes.
    entry = entry_of(cache_dir, "ryu")
    manifest = json.loads((entry / "manifest.json").read_text())
    library = entry / next(f["name"] for f in manifest["files"] if f["emit"] == "link")
    original = library.read_bytes()
    library.chmod(0o600)
    library.write_bytes(bytes(b ^ 0xFF for b in original[:64]) + original[64:])
    corrupt_before = cli(cache_dir, "stats")["totals"]["corrupt"]
    before = magic(first)["session"]

    outcome = run_ok(
        first,
        ':dep ryu = "1"\n:dep hex = "0.4"\n'
        "format!(\"{} {}\", ryu::Buffer::new().format(1.5f64), hex::encode([0xab, 0x01]))",
    )
    assert outcome.result_text() == '"1.5 ab01"'
    after = magic(first)["session"]
    # hex came from prebuild's entry; ryu's damaged entry was refused and
    # ryu compiled again (the build never linked the tampered file).
    assert "hex" in after["crates_hit"] and "hex" not in before["crates_hit"], after
    assert "ryu" in after["crates_missed"] and "ryu" not in after["crates_hit"], after
    assert cli(cache_dir, "stats")["totals"]["corrupt"] == corrupt_before + 1
    # The fresh compile replaced it: the cache is whole again.
    assert cli(cache_dir, "verify")["problems"] == []
    assert entry_of(cache_dir, "ryu").joinpath("manifest.json").exists()


def test_prebuild_with_no_crate_leaves_a_first_dep_only_the_users_crate_to_compile(tmp_path):
    # `./kernel lab` runs `ferrolab prebuild` in the background: ferrolab's
    # own crates (the checkpoint runtime every first `:dep` adds) are then
    # compiled before any notebook asks for a crate.
    cache = tmp_path / "cache"
    said = prebuild(cache)
    assert "ferrolab's own crates (the checkpoint runtime): ready" in said, said
    kernel = Kernel(env={"FERROLAB_BUILD_CACHE_DIR": str(cache)})
    try:
        assert run_ok(kernel, ITOA.format(n=12)).result_text() == '"12"'
        session = magic(kernel)["session"]
        assert RUNTIME_CRATES <= set(session["crates_hit"]), session
        assert not RUNTIME_CRATES & set(session["crates_missed"]), session
        # itoa is the user's crate: nothing else was compiled.
        assert set(session["crates_missed"]) <= {"ctx", "itoa"}, session
    finally:
        kernel.shutdown()


def runtime_status(cache):
    """Where ferrolab's own crates stand in `cache` (`ferrolab cache stats`)."""
    return cli(cache, "stats")["runtime"]


def wait_for_runtime(cache, wanted, deadline_seconds=BUILD_TIMEOUT):
    """Polls `ferrolab cache stats` until the runtime's status is `wanted`."""
    deadline = time.monotonic() + deadline_seconds
    while (status := runtime_status(cache)) != wanted:
        assert time.monotonic() < deadline, f"the runtime stayed {status!r}, not {wanted!r}"
        time.sleep(0.5)


WARM_UP_ON = {"FERROLAB_RUNTIME_WARMUP": "1"}


def test_a_kernel_warms_the_runtime_into_an_empty_cache_before_the_first_dep(tmp_path):
    # A machine where nothing filled the cache (no `./kernel lab`, no prebuild):
    # the kernel compiles ferrolab's own crates in the background while its
    # user reads, and the first `:dep` then compiles only the user's crate.
    cache = tmp_path / "cache"
    kernel = Kernel(env={"FERROLAB_BUILD_CACHE_DIR": str(cache), **WARM_UP_ON})
    try:
        wait_for_runtime(cache, "ready")
        assert run_ok(kernel, ITOA.format(n=7)).result_text() == '"7"'
        session = magic(kernel)["session"]
        assert RUNTIME_CRATES <= set(session["crates_hit"]), session
        assert set(session["crates_missed"]) <= {"ctx", "itoa"}, session
        assert magic(kernel)["runtime"] == "ready"
    finally:
        kernel.shutdown()


def test_a_first_dep_before_the_warm_up_ends_stops_it_and_builds_the_rest(tmp_path):
    cache = tmp_path / "cache"
    kernel = Kernel(env={"FERROLAB_BUILD_CACHE_DIR": str(cache), **WARM_UP_ON})
    try:
        # The warm-up is compiling (an empty cache takes seconds) when the
        # notebook's first `:dep` comes.
        wait_for_runtime(cache, "warming")
        assert run_ok(kernel, ITOA.format(n=9)).result_text() == '"9"'
        # The kernel ended the warm-up before its own build: nothing compiles
        # into the cache behind the cell's back, and what either build stored
        # is whole.
        assert runtime_status(cache) != "warming"
        assert cli(cache, "verify")["problems"] == []
        session = magic(kernel)["session"]
        assert RUNTIME_CRATES <= set(session["crates_hit"]) | set(session["crates_missed"]), session
        # The session stored what the warm-up had not: a later warm-up finds
        # every crate and compiles none.
        done = subprocess.run(
            [str(BINARY), "prebuild"],
            env={**os.environ, "FERROLAB_BUILD_CACHE_DIR": str(cache)},
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
        )
        assert done.returncode == 0, done.stderr
        assert re.search(r"\(\d+ crate builds from the cache, 0 compiled and stored\)", done.stdout), (
            done.stdout
        )
        assert runtime_status(cache) == "ready"
    finally:
        kernel.shutdown()


def test_a_failed_warm_up_is_reported_and_not_retried_by_every_kernel(tmp_path):
    # No registry to fetch the runtime's crates from (an offline machine with
    # an empty cargo home): the background warm-up fails, says so in the
    # cache's stats, and kernels do not retry it for an hour; `ferrolab
    # prebuild` does retry, and shows cargo's reason.
    cache = tmp_path / "cache"
    env = {
        **os.environ,
        "FERROLAB_BUILD_CACHE_DIR": str(cache),
        "CARGO_HOME": str(tmp_path / "empty-cargo-home"),
        "CARGO_NET_OFFLINE": "true",
    }

    def ferrolab(*args):
        return subprocess.run([str(BINARY), *args], env=env, capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT)

    assert ferrolab("prebuild", "--warm-up").returncode != 0
    stats = json.loads(ferrolab("cache", "stats", "--json").stdout)
    assert stats["runtime"] == "failed", stats
    text = ferrolab("cache", "stats").stdout
    assert "compiling them in the background failed" in text, text
    stamps = list((cache / "ready").glob("*.failed"))
    assert len(stamps) == 1, stamps
    recorded = stamps[0].stat().st_mtime_ns
    # A second kernel's warm-up within the hour leaves it alone.
    assert ferrolab("prebuild", "--warm-up").returncode != 0
    assert stamps[0].stat().st_mtime_ns == recorded
    # The command a person runs tries again and says why it failed.
    done = ferrolab("prebuild")
    assert done.returncode != 0
    assert "ferrolab's own crates (the checkpoint runtime): failed: cargo failed" in done.stderr, done.stderr
    assert "offline" in done.stderr, done.stderr
