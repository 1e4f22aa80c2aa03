#!/usr/bin/env bash
# Runs ferrolab's GPU notebooks on a GPU machine with no network and no Rust, from
# the bundle tests/gpu/bundle.sh made: reassembles and unpacks it, installs the
# kernelspec, runs the notebooks with cargo offline (vendored crates), and writes
# the executed notebooks and a one-line summary of each.
#
#   gpu    notebooks/gpu.ipynb: cudarc on the card, result checked on the CPU
#          (summary.txt)
#   train  notebooks/kaggle_train.ipynb with candle's cuda feature: trains on the
#          GPU against the bundled fake Kaggle server, crashes, resumes, submits;
#          every claim checked as ./kernel test checks it on the CPU, plus the
#          device and the time per epoch on CUDA and CPU (train.summary.txt;
#          needs scikit-learn for the digits and nvcc for candle's kernels)
#   all    both (default)
#
# FERROLAB_GPU_REHEARSAL=1 rehearses on a machine without a GPU: only `train`,
# with candle on the CPU (the bundle, the offline build, the data, the checks).
#
# Usage: run_offline.sh PARTS_DIR [OUT_DIR] [gpu|train|all]
#        (OUT_DIR default: ./ferrolab-gpu-out)
# Exit status 0 only when every notebook ran and every check passed.
set -euo pipefail

PARTS="${1:?usage: run_offline.sh PARTS_DIR [OUT_DIR] [gpu|train|all]}"
OUT="${2:-$PWD/ferrolab-gpu-out}"
MODE="${3:-all}"
REHEARSAL="${FERROLAB_GPU_REHEARSAL:-0}"
case "$MODE" in gpu|train|all) ;; *) echo "error: the mode is gpu, train or all, not '$MODE'" >&2; exit 2 ;; esac
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
if [ "$REHEARSAL" = 1 ]; then
  [ "$MODE" = gpu ] && fail "a rehearsal runs only the training notebook (mode train or all)"
  MODE=train
fi
if [ "$MODE" != gpu ]; then
  python3 -c 'import sklearn' 2>/dev/null ||
    fail "the training run needs scikit-learn in python3 (its digits are the competition's data)"
  if [ "$REHEARSAL" != 1 ]; then
    command -v nvcc >/dev/null || fail "candle's CUDA kernels are built with nvcc: put the CUDA toolkit's bin on PATH"
  fi
fi

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
# The kernels' build cache lives beside the unpacked bundle, not in the user's home.
export FERROLAB_BUILD_CACHE_DIR="$WORK/build-cache"

failed=0
if [ "$MODE" != train ]; then
  step "Running gpu.ipynb"
  status=0
  python3 "$B/run_notebook.py" "$B/gpu.ipynb" -o "$OUT/gpu.executed.ipynb" --timeout 900 || status=$?
  checked=0
  python3 "$B/summarize.py" "$OUT/gpu.executed.ipynb" > "$OUT/summary.txt" || checked=$?
  cat "$OUT/summary.txt"
  # Fails when the notebook failed or when the GPU's result was not checked OK.
  if [ "$status" -ne 0 ] || [ "$checked" -ne 0 ]; then failed=1; fi
fi

if [ "$MODE" != gpu ]; then
  if [ "$REHEARSAL" = 1 ]; then
    step "Rehearsing the training notebook on the CPU"
    rehearse=(--rehearse)
  else
    step "Running the training notebook on CUDA"
    rehearse=()
    # candle-kernels compiles its .cu files with nvcc for this card and links cudart.
    CUDA_ROOT="$(dirname "$(dirname "$(command -v nvcc)")")"
    CUDA_LIBS="$CUDA_ROOT/lib64:$CUDA_ROOT/targets/x86_64-linux/lib"
    export LIBRARY_PATH="$CUDA_LIBS${LIBRARY_PATH:+:$LIBRARY_PATH}"
    export LD_LIBRARY_PATH="$CUDA_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export CUDA_ROOT CUDA_PATH="$CUDA_ROOT"
    if [ -z "${CUDA_COMPUTE_CAP:-}" ] && command -v nvidia-smi >/dev/null; then
      CUDA_COMPUTE_CAP="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n1 | tr -d ' .')"
      export CUDA_COMPUTE_CAP
    fi
  fi
  status=0
  python3 "$B/train_on_gpu.py" "$OUT" --runner "$B/run_notebook.py" --tests "$B" \
    --notebook "$B/kaggle_train.ipynb" "${rehearse[@]}" || status=$?
  if [ "$status" -ne 0 ]; then failed=1; fi
fi
exit "$failed"
