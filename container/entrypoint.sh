#!/bin/sh
# The entry point of ferrolab's container image (container/Containerfile).
#
# What it runs, from its arguments:
#   (none)                      jupyter lab --ip=0.0.0.0 --no-browser, or
#                               jupyterhub-singleuser when JupyterHub started the container
#                               (JUPYTERHUB_API_TOKEN is set), or
#                               `ferrolab gateway-launch` when Jupyter Enterprise Gateway
#                               started it as a kernel pod (RESPONSE_ADDRESS is set; the
#                               launcher reads KERNEL_ID, PUBLIC_KEY, PORT_RANGE too)
#   --opt ...                   the same with these options added (--ip=0.0.0.0 only when
#                               they choose no --ip: Jupyter takes it once)
#   jupyterhub-singleuser ...   exec'd as given: the hub does the authentication
#   anything else               exec'd as given
# A Jupyter server (jupyter lab/server/notebook) always asks for a token: an option
# that sets the token to '' without setting a password is refused (exit status 2)
# before anything else happens. Then:
#   1. the build cache is created if missing, must belong to this user, loses write
#      permission for others, must be writable, and must pass `ferrolab cache stats`;
#   2. the kernelspec is checked, and registered again when it does not start this
#      ferrolab binary (for this user when the prefix cannot be written), and put
#      first on JUPYTER_PATH;
#   3. `ferrolab prebuild` starts in the background (ferrolab's own crates, which
#      every kernel's first `:dep` adds; quick when they are in the cache already);
#   4. the command is exec'd. A failed step 1 or 2 ends the script with status 1.
#
# Every path it touches comes from the environment; the defaults are the image's:
#   FERROLAB_BINARY               /usr/local/bin/ferrolab
#   FERROLAB_BUILD_CACHE_DIR      /var/cache/ferrolab/build-cache (inside the image's VOLUME)
#   FERROLAB_BUILD_CACHE_MB       0 turns the cache off (and this script's checks of it)
#   FERROLAB_KERNELSPEC_PREFIX    /opt/venv: the kernelspec is PREFIX/share/jupyter/kernels/NAME
#   FERROLAB_KERNEL_NAME          ferrolab
#   FERROLAB_KERNEL_DISPLAY_NAME  Rust (ferrolab)
#   FERROLAB_PREBUILD             1; 0 skips the background prebuild
#   FERROLAB_PREBUILD_LOG         $XDG_CACHE_HOME/ferrolab/prebuild.log (~/.cache/...);
#                                 the prebuild's process id goes to the same path + .pid
# FERROLAB_BINARY ... FERROLAB_PREBUILD_LOG other than the cache's two are read by
# this script only; ferrolab itself reads FERROLAB_BUILD_CACHE_DIR and _MB.
set -eu

say() { printf 'ferrolab-entrypoint: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

BINARY="${FERROLAB_BINARY:-/usr/local/bin/ferrolab}"
CACHE_DIR="${FERROLAB_BUILD_CACHE_DIR:-/var/cache/ferrolab/build-cache}"
SPEC_PREFIX="${FERROLAB_KERNELSPEC_PREFIX:-/opt/venv}"
KERNEL_NAME="${FERROLAB_KERNEL_NAME:-ferrolab}"
DISPLAY_NAME="${FERROLAB_KERNEL_DISPLAY_NAME:-Rust (ferrolab)}"
PREBUILD="${FERROLAB_PREBUILD:-1}"
PREBUILD_LOG="${FERROLAB_PREBUILD_LOG:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/ferrolab/prebuild.log}"

cache_off() { [ "${FERROLAB_BUILD_CACHE_MB:-}" = 0 ]; }

[ -x "$BINARY" ] || die "no ferrolab binary at $BINARY (set FERROLAB_BINARY)"

setup_cache() {
  if cache_off; then
    say "build cache: off (FERROLAB_BUILD_CACHE_MB=0)"
    return
  fi
  case "$CACHE_DIR" in
    /*) ;;
    *) die "FERROLAB_BUILD_CACHE_DIR=$CACHE_DIR is not an absolute path" ;;
  esac
  (umask 077 && mkdir -p "$CACHE_DIR") 2>/dev/null ||
    die "cannot create the build cache $CACHE_DIR: mount a writable volume there (docker run -v ferrolab-cache:$(dirname "$CACHE_DIR")), or set FERROLAB_BUILD_CACHE_MB=0 to run without the cache"
  owner="$(stat -L -c %u "$CACHE_DIR")"
  me="$(id -u)"
  [ "$owner" = "$me" ] ||
    die "the build cache $CACHE_DIR belongs to uid $owner, not to this user (uid $me). Kernels load the compiled code kept there, so ferrolab only uses a directory that is yours alone: chown it to uid $me, mount an empty volume at $(dirname "$CACHE_DIR") (the cache is then created inside it), or set FERROLAB_BUILD_CACHE_MB=0 to run without the cache"
  [ -w "$CACHE_DIR" ] ||
    die "the build cache $CACHE_DIR is not writable (a read-only mount?); set FERROLAB_BUILD_CACHE_MB=0 to run without the cache"
  # A fresh bind mount is often group- or world-writable; ferrolab refuses that.
  chmod go-w "$CACHE_DIR" || die "cannot take write permission on $CACHE_DIR away from others"
  export FERROLAB_BUILD_CACHE_DIR="$CACHE_DIR"
  report="$("$BINARY" cache stats 2>&1)" || die "ferrolab cannot use the build cache: $report"
  say "build cache: $CACHE_DIR"
}

# True when the kernel.json $1 starts this binary as a kernel.
spec_starts_binary() {
  [ -f "$1" ] || return 1
  python3 - "$1" "$BINARY" <<'EOF' 2>/dev/null
import json, os, sys
with open(sys.argv[1], encoding="utf-8") as spec:
    argv = json.load(spec).get("argv") or []
same = len(argv) > 1 and os.path.realpath(argv[0]) == os.path.realpath(sys.argv[2])
sys.exit(0 if same and argv[1] == "kernel" else 1)
EOF
}

register_kernel() {
  data_dir="$SPEC_PREFIX/share/jupyter"
  spec="$data_dir/kernels/$KERNEL_NAME/kernel.json"
  if spec_starts_binary "$spec"; then
    say "kernelspec $KERNEL_NAME: $spec"
  elif "$BINARY" install --prefix "$SPEC_PREFIX" --name "$KERNEL_NAME" --display-name "$DISPLAY_NAME" >/dev/null 2>&1; then
    say "kernelspec $KERNEL_NAME registered: $spec"
  else
    # The image's prefix belongs to root: register it for this user instead.
    out="$("$BINARY" install --user --name "$KERNEL_NAME" --display-name "$DISPLAY_NAME" 2>&1)" ||
      die "cannot register the kernelspec in $SPEC_PREFIX nor for this user: $out"
    kernel_dir="${out#"Installed kernelspec $KERNEL_NAME in "}"
    data_dir="$(dirname "$(dirname "$kernel_dir")")"
    spec="$kernel_dir/kernel.json"
    say "kernelspec $KERNEL_NAME registered for this user: $spec"
  fi
  spec_starts_binary "$spec" || die "the kernelspec $spec does not start $BINARY"
  # First on Jupyter's path, so an older spec of the same name (say in a home
  # directory kept on a volume) never shadows this one.
  export JUPYTER_PATH="$data_dir${JUPYTER_PATH:+:$JUPYTER_PATH}"
}

start_prebuild() {
  [ "$PREBUILD" = 1 ] && ! cache_off || return 0
  if ! mkdir -p "$(dirname "$PREBUILD_LOG")" 2>/dev/null; then
    say "warning: cannot create $(dirname "$PREBUILD_LOG"); no background prebuild"
    return 0
  fi
  # Its own session (so stopping the server leaves it alone and it can be stopped
  # as a group), niced, and orphaned at once: the init process reaps it, not the
  # command this script becomes.
  # shellcheck disable=SC2016,SC2094 # $$ is the inner shell's; the log path names the pid file
  (setsid sh -c 'echo $$ >"$1.pid"; exec nice -n 10 "$2" prebuild' sh "$PREBUILD_LOG" "$BINARY" \
    </dev/null >"$PREBUILD_LOG" 2>&1 &)
  say "compiling ferrolab's own crates into the build cache in the background (log: $PREBUILD_LOG)"
}

# Refuses options that turn a Jupyter server's token off (--X.token= or --X.token ''),
# unless a password is set as well.
check_token_options() {
  empty_token="" password="" previous=""
  for arg in "$@"; do
    case "$previous" in
      --*.token)
        case "$arg" in "" | "''" | '""') empty_token="$previous ''" ;; esac ;;
      --*.password | --*.hashed_password)
        case "$arg" in "" | "''" | '""') ;; *) password=yes ;; esac ;;
    esac
    case "$arg" in
      --*.token= | --*.token="''" | --*.token='""') empty_token="$arg" ;;
      --*.password= | --*.password="''" | --*.password='""') ;;
      --*.password=* | --*.hashed_password=*)
        case "$arg" in *= | *"=''" | *'=""') ;; *) password=yes ;; esac ;;
    esac
    previous="$arg"
  done
  if [ -n "$empty_token" ] && [ -z "$password" ]; then
    say "error: refusing to start a Jupyter server without authentication ($empty_token)."
    say "Anyone who reaches its port could run code as this user. Leave the token on (the server"
    say "prints a URL that carries it), choose one with JUPYTER_TOKEN=..., or set a password."
    exit 2
  fi
}

is_jupyter_server() {
  case "$(basename "$1")" in
    jupyter-lab | jupyter-server | jupyter-notebook) return 0 ;;
    jupyter) case "${2:-}" in lab | server | notebook) return 0 ;; esac ;;
  esac
  return 1
}

if [ $# -eq 0 ] && [ -n "${RESPONSE_ADDRESS:-}" ]; then
  # A kernel pod of Enterprise Gateway's KubernetesProcessProxy: the kernel itself.
  set -- "$BINARY" gateway-launch
elif [ $# -eq 0 ] || [ "${1#-}" != "$1" ]; then
  if [ -n "${JUPYTERHUB_API_TOKEN:-}" ]; then
    set -- jupyterhub-singleuser "$@"
  else
    # Jupyter takes --ip once: the default only when the options do not choose one.
    case " $* " in
      *" --ip"[=\ ]* | *" --ServerApp.ip"[=\ ]*) set -- jupyter lab --no-browser "$@" ;;
      *) set -- jupyter lab --ip=0.0.0.0 --no-browser "$@" ;;
    esac
  fi
fi

if is_jupyter_server "$@"; then
  check_token_options "$@"
  # Jupyter refuses to run as root unless told; the image runs as uid 1000, but
  # `docker run --user root` is the caller's choice.
  if [ "$(id -u)" = 0 ]; then
    case " $* " in *" --allow-root "*) ;; *) set -- "$@" --allow-root ;; esac
  fi
fi

setup_cache
register_kernel
start_prebuild

exec "$@"
