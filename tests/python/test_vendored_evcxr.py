"""The vendored evcxr is the pinned release plus ferrolab's patch, and nothing else.

vendor/evcxr-0.22.0 is what crates.io publishes as evcxr 0.22.0 with
vendor/evcxr-0.22.0.patch applied (see vendor/README.md). Taking the patch back
out of a copy must give the published files, byte for byte (their sha256 sums are
in vendor/evcxr-0.22.0.sha256, taken from the published crate), so an edit made
to the vendored tree without a matching patch, or a patch that no longer
describes the tree, fails here. The manifest must still pin that exact version
and route it to the vendored copy.
"""

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "vendor"
VERSION = "0.22.0"
TREE = VENDOR / f"evcxr-{VERSION}"
PATCH = VENDOR / f"evcxr-{VERSION}.patch"
SUMS = VENDOR / f"evcxr-{VERSION}.sha256"


def published_sums():
    sums = {}
    for line in SUMS.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        sums[name] = digest
    return sums


def tree_sums(root):
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_taking_the_patch_out_gives_the_published_crate(tmp_path):
    copy = tmp_path / TREE.name
    shutil.copytree(TREE, copy)
    subprocess.run(
        ["patch", "--reverse", "--strip=1", "--batch", "--quiet", "--input", str(PATCH)],
        cwd=tmp_path, check=True,
    )
    assert tree_sums(copy) == published_sums()


def test_the_patch_changes_the_vendored_tree():
    # The patch is not empty and the tree carries it: a vendored copy that lost
    # the patch (e.g. replaced by the published crate) fails here.
    touched = re.findall(r"^\+\+\+ b/[^/]+/(\S+)", PATCH.read_text(), re.M)
    assert touched == ["src/eval_context.rs", "src/rust_analyzer.rs"]
    sums = published_sums()
    for name in touched:
        assert hashlib.sha256((TREE / name).read_bytes()).hexdigest() != sums[name]


def test_the_manifest_pins_the_version_and_routes_it_to_the_vendored_copy():
    manifest = (ROOT / "Cargo.toml").read_text()
    assert re.search(rf'^evcxr\s*=\s*"={re.escape(VERSION)}"', manifest, re.M)
    patch = manifest.split("[patch.crates-io]", 1)[1]
    assert re.search(rf'^evcxr\s*=\s*{{\s*path\s*=\s*"vendor/evcxr-{re.escape(VERSION)}"\s*}}', patch, re.M)
    assert f'version = "{VERSION}"' in (TREE / "Cargo.toml").read_text()
    lock = (ROOT / "Cargo.lock").read_text()
    entry = re.search(r'\[\[package\]\]\nname = "evcxr"\nversion = "([^"]+)"\n(source = [^\n]+\n)?', lock)
    assert entry and entry.group(1) == VERSION
    assert entry.group(2) is None, "Cargo.lock still takes evcxr from the registry"
