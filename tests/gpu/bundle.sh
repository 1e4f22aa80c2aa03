#!/usr/bin/env bash
# Builds, on a machine with network, a self-contained bundle for a GPU machine
# that has none and no Rust: the ferrolab binary, a minimal Rust toolchain
# (rustc, cargo, rust-std, rust-src), the crates notebooks/gpu.ipynb and
# notebooks/kaggle_train.ipynb need (vendored, candle with its cuda feature;
# crates for other operating systems are emptied), the Python wheels for a
# headless notebook run (Python 3.12), both notebooks, the fake Kaggle server and
# the training run's checks (tests/gpu/train_on_gpu.py), and
# tests/gpu/run_offline.sh. The bundle is a .tar.xz split into parts of at most
# 60 MiB.
#
# Usage: tests/gpu/bundle.sh [OUT_DIR]      (default: tests/gpu/dist, ignored by git)
# Then copy OUT_DIR to the GPU machine and run: OUT_DIR/run_offline.sh OUT_DIR
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${1:-$ROOT/tests/gpu/dist}"
PART_SIZE=60M
PYTHON_VERSION="${BUNDLE_PYTHON_VERSION:-3.12}"
# What the notebooks' :dep lines ask for (gpu.ipynb; kaggle_train.ipynb as
# tests/gpu/train_on_gpu.py makes it for CUDA), and ferrolab's checkpoint runtime.
PROBE_DEPENDENCIES='cudarc = { version = "0.19", features = ["cuda-version-from-build-system", "fallback-latest"] }
candle-core = { version = "0.11", features = ["cuda"] }
candle-nn = { version = "0.11", features = ["cuda"] }
csv = "1"
plotters = { version = "0.3", default-features = false, features = ["svg_backend", "line_series"] }'
# Crates compiled only for other operating systems or for wasm: kept as empty
# packages (manifest only) so that the lock file still resolves.
FOREIGN_CRATES='^(windows|winapi|web-sys|js-sys|wasm-bindgen|wasip|wasi$|redox|libredox|hermit)'
WHEELS=(
  jupyter_client==8.6.3 jupyter_core==5.8.1 nbclient==0.10.2 nbformat==5.10.4 traitlets==5.14.3
  pyzmq==27.1.0 tornado==6.5.2 platformdirs==4.5.0 fastjsonschema==2.21.2 jsonschema==4.25.1
  jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==0.28.0
)

step() { printf '\033[1;34m==>\033[0m %s\n' "$*"; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null || fail "cargo is needed to build the bundle"
command -v xz >/dev/null || fail "xz is needed (Debian: apt install xz-utils)"
STAGE="$(mktemp -d "${TMPDIR:-/tmp}/ferrolab-bundle.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
B="$STAGE/ferrolab-gpu"
mkdir -p "$B"

step "Building ferrolab (release)"
(cd "$ROOT" && cargo build --release --locked)
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
install -D -m 755 "$TARGET_DIR/release/ferrolab" "$B/bin/ferrolab"

step "Copying a minimal Rust toolchain"
SYSROOT="$(rustc --print sysroot)"
HOST="$(rustc -vV | sed -n 's/^host: //p')"
[ -d "$SYSROOT/lib/rustlib/src/rust/library" ] || fail "rust-src is missing: rustup component add rust-src"
T="$B/toolchain"
mkdir -p "$T/bin" "$T/lib/rustlib/$HOST" "$T/lib/rustlib/src/rust"
cp "$SYSROOT/bin/rustc" "$SYSROOT/bin/cargo" "$T/bin/"
cp -P "$SYSROOT"/lib/*.so* "$T/lib/"
# The standard library for the host, without the sanitizer runtimes.
cp -r "$SYSROOT/lib/rustlib/$HOST/lib" "$T/lib/rustlib/$HOST/"
find "$T/lib/rustlib/$HOST/lib" -name 'librustc-*_rt.*' -delete
# rustc links with its own lld by default on this target.
mkdir -p "$T/lib/rustlib/$HOST/bin/gcc-ld"
cp "$SYSROOT/lib/rustlib/$HOST/bin/rust-lld" "$SYSROOT/lib/rustlib/$HOST/bin/rust-objcopy" "$T/lib/rustlib/$HOST/bin/"
cp "$SYSROOT/lib/rustlib/$HOST/bin/gcc-ld/ld.lld" "$T/lib/rustlib/$HOST/bin/gcc-ld/"
cp -r "$SYSROOT/lib/rustlib/src/rust/library" "$T/lib/rustlib/src/rust/"
"$T/bin/rustc" --version > "$B/toolchain-version.txt"

step "Vendoring the crates the notebooks use"
PROBE="$STAGE/probe"
mkdir -p "$PROBE/src"
printf '[package]\nname = "probe"\nversion = "0.0.0"\nedition = "2024"\n\n[dependencies]\n%s\nferrolab-checkpoint = { path = "%s" }\n' \
  "$PROBE_DEPENDENCIES" "$ROOT/crates/checkpoint" > "$PROBE/Cargo.toml"
echo 'fn main() {}' > "$PROBE/src/main.rs"
# With the standard library's own dependencies: rust-analyzer (evcxr's type inference
# for every `let`) loads the sysroot with `cargo metadata` on its library workspace,
# and offline that resolves only from the vendor directory. Vendored from the
# bundle's copy of rust-src, so the toolchain's own lock file is never touched.
LIBRARY="$T/lib/rustlib/src/rust/library"
(cd "$PROBE" && RUSTC_BOOTSTRAP=1 cargo vendor --quiet --sync "$LIBRARY/Cargo.toml" "$B/vendor" > /dev/null)
python3 - "$B/vendor" "$FOREIGN_CRATES" <<'PY'
import json, re, shutil, sys
from pathlib import Path
vendor, pattern = Path(sys.argv[1]), re.compile(sys.argv[2])
for crate in sorted(vendor.iterdir()):
    if not pattern.match(crate.name):
        continue
    checksum = json.loads((crate / ".cargo-checksum.json").read_text())
    for entry in crate.iterdir():
        if entry.name != "Cargo.toml":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    (crate / "src").mkdir()
    (crate / "src" / "lib.rs").write_text("")
    (crate / ".cargo-checksum.json").write_text(json.dumps({"files": {}, "package": checksum.get("package")}))
PY
# The emptied crates must not be needed here: the probe resolves offline from the vendor directory alone.
mkdir -p "$PROBE/.cargo"
printf '[source.crates-io]\nreplace-with = "vendored"\n\n[source.vendored]\ndirectory = "%s"\n' "$B/vendor" > "$PROBE/.cargo/config.toml"
(cd "$PROBE" && cargo tree --offline --quiet --target x86_64-unknown-linux-gnu > /dev/null) ||
  fail "the vendored crates do not resolve offline"
(cd "$PROBE" && RUSTC_BOOTSTRAP=1 cargo metadata --offline --format-version 1 \
  --manifest-path "$LIBRARY/Cargo.toml" > /dev/null) ||
  fail "the standard library's workspace does not resolve offline (rust-analyzer needs it)"
du -sh "$B/vendor" | sed 's/^/    vendor: /'

step "Downloading Python wheels for Python $PYTHON_VERSION"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$B/wheels" "${WHEELS[@]}"

step "Adding the notebook, its runner and run_offline.sh"
cp "$ROOT/notebooks/gpu.ipynb" "$ROOT/notebooks/kaggle_train.ipynb" "$ROOT/tests/tools/run_notebook.py" \
  "$ROOT/tests/gpu/summarize.py" "$ROOT/tests/gpu/train_on_gpu.py" "$ROOT/tests/python/fake_kaggle.py" \
  "$ROOT/tests/python/test_train_notebook.py" "$B/"
cp "$ROOT/tests/gpu/run_offline.sh" "$B/"

step "Compressing and splitting into parts of at most $PART_SIZE"
mkdir -p "$OUT"
rm -f "$OUT"/ferrolab-gpu.tar.xz.part-*
tar -C "$STAGE" -cf - ferrolab-gpu | xz -9 -T0 | split -b "$PART_SIZE" - "$OUT/ferrolab-gpu.tar.xz.part-"
cp "$ROOT/tests/gpu/run_offline.sh" "$OUT/"
(cd "$OUT" && sha256sum ferrolab-gpu.tar.xz.part-* > SHA256SUMS)
du -ch "$OUT"/ferrolab-gpu.tar.xz.part-* | sed 's/^/    /'
step "Done: copy $OUT to the GPU machine and run run_offline.sh there"
