#!/usr/bin/env bash
# Runs notebooks/gpu.ipynb through ferrolab on a GPU machine with no network and
# no Rust, from the bundle tests/gpu/bundle.sh made: reassembles and unpacks it,
# installs the kernelspec, runs the notebook with cargo offline (vendored
# crates), and writes the executed notebook and a one-line summary.
#
# Usage: run_offline.sh PARTS_DIR [OUT_DIR]     (OUT_DIR default: ./ferrolab-gpu-out)
set -euo pipefail

PARTS="${1:?usage: run_offline.sh PARTS_DIR [OUT_DIR]}"
OUT="${2:-$PWD/ferrolab-gpu-out}"
WORK="${FERROLAB_BUNDLE_WORK:-${TMPDIR:-/tmp}/ferrolab-gpu-work}"
step() { printf '==> %s\n' "$*"; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

ls "$PARTS"/ferrolab-gpu.tar.xz.part-* >/dev/null 2>&1 || fail "no ferrolab-gpu.tar.xz.part-* files in $PARTS"
if [ -f "$PARTS/SHA256SUMS" ]; then
  step "Checking the parts"
  (cd "$PARTS" && sha256sum --quiet -c SHA256SUMS) || fail "a part is damaged or missing; copy the bundle again"
fi
command -v python3 >/dev/null || fail "python3 is needed on the GPU machine"
command -v cc >/dev/null || fail "a C linker (cc) is needed to link Rust code; install gcc"

step "Unpacking into $WORK"
rm -rf "$WORK"
mkdir -p "$WORK" "$OUT"
cat "$PARTS"/ferrolab-gpu.tar.xz.part-* | xz -dc | tar -C "$WORK" -xf -
B="$WORK/ferrolab-gpu"

step "Setting up Rust (offline, vendored crates)"
export PATH="$B/toolchain/bin:$PATH"
export CARGO_HOME="$WORK/cargo-home"
mkdir -p "$CARGO_HOME"
cat > "$CARGO_HOME/config.toml" <<TOML
[source.crates-io]
replace-with = "vendored"

[source.vendored]
directory = "$B/vendor"

[net]
offline = true
TOML
unset RUSTUP_TOOLCHAIN RUSTC CARGO
rustc --version
cargo --version

if python3 -c 'import nbclient, jupyter_client, zmq' 2>/dev/null; then
  step "Using the Jupyter packages this Python already has"
else
  step "Installing the Python packages for the notebook runner ($(python3 -V))"
  python3 -m pip install --quiet --no-index --no-deps --no-compile --target "$WORK/site" "$B"/wheels/*.whl ||
    fail "the bundled wheels are for Python 3.12; rebuild with BUNDLE_PYTHON_VERSION=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")') tests/gpu/bundle.sh"
  export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi

step "Registering the kernelspec"
"$B/bin/ferrolab" install --prefix "$WORK/prefix"
export JUPYTER_PATH="$WORK/prefix/share/jupyter" JUPYTER_PLATFORM_DIRS=1
export FERROLAB_HISTORY_FILE="$WORK/history.jsonl"

step "Running gpu.ipynb"
status=0
python3 "$B/run_notebook.py" "$B/gpu.ipynb" -o "$OUT/gpu.executed.ipynb" --timeout 900 || status=$?
checked=0
python3 "$B/summarize.py" "$OUT/gpu.executed.ipynb" > "$OUT/summary.txt" || checked=$?
cat "$OUT/summary.txt"
# Fails when the notebook failed or when the GPU's result was not checked OK.
[ "$status" -ne 0 ] && exit "$status"
exit "$checked"
