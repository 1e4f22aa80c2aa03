"""The container image recipe (container/) without a container engine.

No image is built here (no engine that can pull a base image and run build steps
is available to the tests). What is tested instead:

- container/entrypoint.sh runs for real on this machine with every path it touches
  pointed at temporary directories and the real ferrolab binary: the build cache,
  the kernelspec, the background prebuild, what it execs, and its refusal to start
  a Jupyter server without a token. A real JupyterLab started through it answers
  403 without the token, and a real Rust cell runs through the kernelspec it wrote.
- container/Containerfile is parsed and checked against the repository: every COPY
  source exists and is kept by the build context's ignore file, the build stage gets
  every file `cargo build` reads, the runtime stage keeps cargo, rustc and rust-src
  on PATH, and the paths the Containerfile, the entry script and the JupyterHub
  config share (the cache volume, the binary, the kernelspec prefix) agree.
- container/jupyterhub_config.py is executed against a traitlets Config.
"""

import glob
import json
import os
import queue
import re
import shlex
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from traitlets.config import Config

from conftest import listening_port

ROOT = Path(__file__).resolve().parents[2]
CONTAINER = ROOT / "container"
CONTAINERFILE = CONTAINER / "Containerfile"
IGNOREFILE = CONTAINER / "Containerfile.dockerignore"
ENTRYPOINT = CONTAINER / "entrypoint.sh"
HUB_CONFIG = CONTAINER / "jupyterhub_config.py"
BINARY = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "ferrolab"
# The venv's python3 and jupyter: the entry script's spec check and the servers it starts.
VENV_BIN = Path(sys.executable).parent
REFUSAL = "refusing to start a Jupyter server without authentication"


# --- running the entry script ------------------------------------------------


@dataclass
class Dirs:
    root: Path
    cache: Path = field(init=False)
    prefix: Path = field(init=False)
    data: Path = field(init=False)
    home: Path = field(init=False)
    bin: Path = field(init=False)
    marker: Path = field(init=False)

    def __post_init__(self):
        self.cache = self.root / "volume" / "build-cache"
        self.prefix = self.root / "prefix"
        self.data = self.root / "jupyter-data"
        self.home = self.root / "home"
        self.bin = self.root / "bin"
        self.marker = self.root / "ran.txt"
        for folder in (self.home, self.bin):
            folder.mkdir(parents=True)

    @property
    def spec(self):
        return self.prefix / "share/jupyter/kernels/ferrolab/kernel.json"

    @property
    def prebuild_log(self):
        return self.home / ".cache/ferrolab/prebuild.log"


@pytest.fixture
def dirs(tmp_path):
    return Dirs(tmp_path)


def entry_env(dirs, **overrides):
    """The entry script's environment: every path in `dirs`, the real binary."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("FERROLAB_", "JUPYTERHUB_"))
        and key not in {"JUPYTER_PATH", "JUPYTER_TOKEN", "JUPYTER_TOKEN_FILE", "XDG_CACHE_HOME"}
    }
    env.update(
        PATH=f"{dirs.bin}:{VENV_BIN}:{os.environ['PATH']}",
        HOME=str(dirs.home),
        # The toolchain stays where it is (the image sets RUSTUP_HOME too).
        RUSTUP_HOME=os.environ.get("RUSTUP_HOME", str(Path.home() / ".rustup")),
        CARGO_HOME=os.environ.get("CARGO_HOME", str(Path.home() / ".cargo")),
        FERROLAB_BINARY=str(BINARY),
        FERROLAB_BUILD_CACHE_DIR=str(dirs.cache),
        FERROLAB_KERNELSPEC_PREFIX=str(dirs.prefix),
        FERROLAB_PREBUILD="0",
        # No warm spare kernel left behind (test_spare.py tests them).
        FERROLAB_SPARE="0",
        JUPYTER_DATA_DIR=str(dirs.data),
        JUPYTER_RUNTIME_DIR=str(dirs.root / "runtime"),
        MARKER=str(dirs.marker),
    )
    env.update(overrides)
    return {key: value for key, value in env.items() if value is not None}


def processes():
    """{pid: (parent pid, session id)} of the live processes."""
    table = {}
    for stat_file in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat_file).read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if fields[0] != "Z":
            table[int(stat_file.split("/")[2])] = (int(fields[1]), int(fields[3]))
    return table


def kill_session(sid):
    """SIGKILLs every process of session `sid` until none is left."""
    assert sid != os.getsid(0), "not the test run's own session"
    deadline = time.monotonic() + 30
    while members := [pid for pid, (_, session) in processes().items() if session == sid]:
        assert time.monotonic() < deadline, f"processes {members} of session {sid} outlived SIGKILL for 30 s"
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def kill_tree(root):
    """SIGKILLs `root`, its descendants (Jupyter starts kernels in sessions of their own)
    and every process of their sessions."""
    table = processes()
    doomed, grew = {root}, True
    while grew:
        more = {pid for pid, (parent, _) in table.items() if parent in doomed} - doomed
        doomed |= more
        grew = bool(more)
    sessions = {table[pid][1] for pid in doomed if pid in table} | {root}
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for sid in sessions - {os.getsid(0)}:
        kill_session(sid)


class Entry:
    """The entry script running in a session of its own (killed at exit)."""

    def __init__(self, args, env, wrapper=()):
        self.process = subprocess.Popen(
            [*wrapper, str(ENTRYPOINT), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines = queue.Queue()
        self.output = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for_line(self, pattern, timeout):
        """The first output line matching `pattern` (a regex)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} in {timeout} s:\n{''.join(self.output)}")
            if line is None:
                raise AssertionError(f"exited ({self.process.wait()}) before {pattern!r}:\n{''.join(self.output)}")
            self.output.append(line)
            if re.search(pattern, line):
                return line

    def finish(self, timeout):
        """(exit status, all output)."""
        status = self.process.wait(timeout=timeout)
        while (line := self.lines.get(timeout=timeout)) is not None:
            self.output.append(line)
        return status, "".join(self.output)

    def close(self):
        kill_tree(self.process.pid)
        self.process.wait(timeout=30)
        self.process.stdout.close()


def run_entry(args, env, timeout=120, wrapper=()):
    entry = Entry(args, env, wrapper)
    try:
        return entry.process.pid, *entry.finish(timeout)
    finally:
        entry.close()


def fake_command(dirs, name):
    """An executable `name` first on PATH that writes its pid and argv to MARKER."""
    path = dirs.bin / name
    path.write_text('#!/bin/sh\n{ echo "$$"; for arg in "$@"; do printf \'%s\\n\' "$arg"; done; } > "$MARKER"\n')
    path.chmod(0o755)


def marker_lines(dirs):
    return dirs.marker.read_text().splitlines()


def kernel_argv(spec):
    return json.loads(Path(spec).read_text())["argv"]


def http_status(url, token=None):
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


# --- the entry script ---------------------------------------------------------


def test_entrypoint_prepares_the_cache_and_kernelspec_then_execs_the_command(dirs):
    command = 'echo "cache=$FERROLAB_BUILD_CACHE_DIR"; echo "pid=$$"; jupyter kernelspec list --json'
    pid, status, output = run_entry(["sh", "-c", command], entry_env(dirs))
    assert status == 0, output
    # The command saw the cache in its environment and *is* the entry script's process (exec).
    assert f"cache={dirs.cache}\n" in output
    assert f"pid={pid}\n" in output
    # The cache exists, private to this user, and ferrolab has set it up (its LAYOUT file).
    assert stat.S_IMODE(dirs.cache.stat().st_mode) == 0o700
    assert (dirs.cache / "LAYOUT").is_file()
    # The kernelspec starts this binary, and the exec'd Jupyter finds it where it was written.
    assert kernel_argv(dirs.spec)[:2] == [str(BINARY.resolve()), "kernel"]
    listing = json.loads(output[output.index("{") :])
    assert listing["kernelspecs"]["ferrolab"]["resource_dir"] == str(dirs.spec.parent)
    # FERROLAB_PREBUILD=0: no background prebuild.
    assert not dirs.prebuild_log.exists()


def test_entrypoint_makes_a_world_writable_cache_private(dirs):
    """A fresh bind mount is often 0777; ferrolab refuses such a cache, the entry script fixes it."""
    dirs.cache.mkdir(parents=True)
    dirs.cache.chmod(0o777)
    _, status, output = run_entry([str(BINARY), "cache", "stats", "--json"], entry_env(dirs))
    assert status == 0, output
    stats = json.loads(output[output.index("{") :])
    assert stats["dir"] == str(dirs.cache) and stats["enabled"] is True
    assert stat.S_IMODE(dirs.cache.stat().st_mode) & 0o022 == 0


def test_entrypoint_refuses_a_cache_that_belongs_to_someone_else(dirs):
    if os.geteuid() == 0:
        foreign = dirs.root / "foreign"
        foreign.mkdir()
        os.chown(foreign, 12345, 12345)
        owner = 12345
    else:
        foreign = Path("/")  # root's; a user's entry script may not take it
        owner = 0
    _, status, output = run_entry(["sh", "-c", 'echo ran > "$MARKER"'],
                                  entry_env(dirs, FERROLAB_BUILD_CACHE_DIR=str(foreign)))
    assert status == 1, output
    assert f"the build cache {foreign} belongs to uid {owner}" in output
    assert "FERROLAB_BUILD_CACHE_MB=0" in output  # says how to run without it
    assert not dirs.marker.exists()


def test_entrypoint_refuses_a_read_only_cache(dirs):
    dirs.cache.mkdir(parents=True)
    wrapper = ()
    if os.geteuid() != 0:
        dirs.cache.chmod(0o555)
    else:
        # root may write anywhere but on a read-only file system: a read-only tmpfs,
        # mounted in a mount namespace of the entry script's own.
        probe = subprocess.run(["unshare", "-m", "mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs",
                                str(dirs.cache)], capture_output=True, text=True)
        if probe.returncode != 0:
            pytest.skip(f"cannot mount a read-only tmpfs in a mount namespace here: {probe.stderr}")
        mount = 'mount -t tmpfs -o ro,size=1m,mode=0700 tmpfs "$1" && shift && exec "$@"'
        wrapper = ("unshare", "-m", "sh", "-c", mount, "sh", str(dirs.cache))
    _, status, output = run_entry(["sh", "-c", 'echo ran > "$MARKER"'], entry_env(dirs), wrapper=wrapper)
    assert status == 1, output
    assert f"the build cache {dirs.cache} is not writable" in output
    assert not dirs.marker.exists()


def test_entrypoint_with_the_cache_off_leaves_the_cache_alone(dirs):
    env = entry_env(dirs, FERROLAB_BUILD_CACHE_MB="0", FERROLAB_PREBUILD="1")
    _, status, output = run_entry(["sh", "-c", 'echo ran > "$MARKER"'], env)
    assert status == 0, output
    assert "build cache: off" in output
    assert dirs.marker.read_text() == "ran\n"
    assert not dirs.cache.parent.exists()
    assert not dirs.prebuild_log.exists()  # nothing to prebuild into


def test_entrypoint_replaces_a_stale_kernelspec(dirs):
    """A spec left by an older image (another binary path) is written again."""
    dirs.spec.parent.mkdir(parents=True)
    dirs.spec.write_text(json.dumps({"argv": ["/old/image/ferrolab", "kernel", "-f", "{connection_file}"],
                                     "display_name": "old", "language": "rust"}))
    _, status, output = run_entry(["true"], entry_env(dirs))
    assert status == 0, output
    assert kernel_argv(dirs.spec)[0] == str(BINARY.resolve())
    assert json.loads(dirs.spec.read_text())["display_name"] == "Rust (ferrolab)"


def test_entrypoint_registers_for_the_user_when_the_prefix_is_not_writable(dirs):
    """The image's prefix belongs to root: the spec goes to the user's data dir, first on JUPYTER_PATH."""
    blocker = dirs.root / "a-file"
    blocker.write_text("")
    env = entry_env(dirs, FERROLAB_KERNELSPEC_PREFIX=str(blocker / "prefix"))
    _, status, output = run_entry(["sh", "-c", 'echo "path=$JUPYTER_PATH"'], env)
    assert status == 0, output
    user_spec = dirs.data / "kernels/ferrolab/kernel.json"
    assert kernel_argv(user_spec)[:2] == [str(BINARY.resolve()), "kernel"]
    assert f"path={dirs.data}\n" in output


@pytest.mark.parametrize(
    "args",
    [
        ["jupyter", "lab", "--IdentityProvider.token="],
        ["jupyter", "lab", "--ServerApp.token=''"],
        ["jupyter-lab", "--NotebookApp.token", ""],
        ["jupyter", "server", "--IdentityProvider.token", "''"],
        ["--ServerApp.token="],  # options for the default JupyterLab
        ["--ServerApp.token=", "--ServerApp.password="],  # an empty password is none
    ],
    ids=["identity-provider", "quoted", "notebookapp-separate", "server-separate", "default-lab",
         "empty-password"],
)
def test_entrypoint_refuses_a_jupyter_server_without_a_token(dirs, args):
    for name in ("jupyter", "jupyter-lab"):
        fake_command(dirs, name)
    _, status, output = run_entry(args, entry_env(dirs))
    assert status == 2, output
    assert REFUSAL in output
    assert not dirs.marker.exists()  # the server never started
    assert not dirs.cache.parent.exists()  # refused before it touched anything


@pytest.mark.parametrize(
    "args",
    [
        ["jupyter", "lab", "--IdentityProvider.token=chosen"],
        ["jupyter", "lab", "--ServerApp.token=", "--PasswordIdentityProvider.hashed_password=argon2:x"],
        ["jupyter", "lab", "--ServerApp.token", "", "--ServerApp.password", "sha1:x"],
    ],
    ids=["token", "password", "password-separate"],
)
def test_entrypoint_starts_a_server_with_a_token_or_a_password(dirs, args):
    fake_command(dirs, "jupyter")
    _, status, output = run_entry(args, entry_env(dirs))
    assert status == 0, output
    ran = marker_lines(dirs)
    root = ["--allow-root"] if os.geteuid() == 0 else []
    assert ran[1:] == args[1:] + root


@pytest.mark.parametrize(
    "args, expected",
    [
        (["jupyterhub-singleuser", "--debug"], ["--debug"]),
        ([], []),  # no command: a hub started the container
        (["--SingleUserNotebookApp.default_url=/lab"], ["--SingleUserNotebookApp.default_url=/lab"]),
    ],
    ids=["given", "default", "options"],
)
def test_hub_spawned_container_execs_jupyterhub_singleuser_as_given(dirs, args, expected):
    fake_command(dirs, "jupyterhub-singleuser")
    env = entry_env(dirs, JUPYTERHUB_API_TOKEN="from-the-hub")
    pid, status, output = run_entry(args, env)
    assert status == 0, output
    ran = marker_lines(dirs)
    assert ran[0] == str(pid)  # exec'd, not a child
    assert ran[1:] == expected  # nothing added: the hub authenticates
    assert kernel_argv(dirs.spec)[0] == str(BINARY.resolve())


def test_an_enterprise_gateway_kernel_pod_runs_the_launcher(dirs):
    """Enterprise Gateway's kernel pods start the image's default command with
    RESPONSE_ADDRESS, PUBLIC_KEY, KERNEL_ID and PORT_RANGE set: the entry script runs
    `ferrolab gateway-launch`, which reads them (here it refuses the bad address, which
    proves both that it ran and that it read the pod's variables)."""
    env = entry_env(dirs, RESPONSE_ADDRESS="no-port-here", PUBLIC_KEY="AAAA", KERNEL_ID="k-1",
                    PORT_RANGE="0..0")
    _, status, output = run_entry([], env)
    assert status == 2, output
    assert 'the response address "no-port-here" is not HOST:PORT' in output, output
    assert "ferrolab gateway-launch:" in output, output


def test_entrypoint_starts_a_background_prebuild_outside_the_server(dirs):
    entry = Entry(["sh", "-c", 'echo "pid=$$"'], entry_env(dirs, FERROLAB_PREBUILD="1"))
    prebuild = None
    try:
        status, output = entry.finish(timeout=120)
        assert status == 0, output
        assert f"log: {dirs.prebuild_log}" in output
        pid_file = Path(f"{dirs.prebuild_log}.pid")
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text().endswith("\n")):
            assert time.monotonic() < deadline, "the prebuild wrote no pid file in 30 s"
            time.sleep(0.05)
        prebuild = int(pid_file.read_text())
        # The pid is written by a shell that then execs nice, which execs ferrolab.
        while (cmdline := Path(f"/proc/{prebuild}/cmdline").read_bytes().split(b"\0"))[0] != str(BINARY).encode():
            assert time.monotonic() < deadline, f"process {prebuild} runs {cmdline}, not ferrolab"
            time.sleep(0.05)
        assert cmdline[:2] == [str(BINARY).encode(), b"prebuild"]
        assert os.getsid(prebuild) == prebuild  # its own session
        ppid = int(Path(f"/proc/{prebuild}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert ppid != entry.process.pid  # orphaned: not a child of what the script became
        assert os.getpriority(os.PRIO_PROCESS, prebuild) >= 10  # niced
    finally:
        if prebuild is not None:
            kill_session(prebuild)
        entry.close()


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], ["lab", "--ip=0.0.0.0", "--no-browser"]),
        (["--port=9999"], ["lab", "--ip=0.0.0.0", "--no-browser", "--port=9999"]),
        (["--ip", "10.0.0.5"], ["lab", "--no-browser", "--ip", "10.0.0.5"]),
        (["--ServerApp.ip=::"], ["lab", "--no-browser", "--ServerApp.ip=::"]),
    ],
    ids=["none", "options", "ip", "serverapp-ip"],
)
def test_default_command_is_jupyterlab_on_every_interface(dirs, args, expected):
    fake_command(dirs, "jupyter")
    pid, status, output = run_entry(args, entry_env(dirs))
    assert status == 0, output
    ran = marker_lines(dirs)
    assert ran[0] == str(pid)
    assert ran[1:] == expected + (["--allow-root"] if os.geteuid() == 0 else [])


@pytest.mark.parametrize("chosen_token", [None, "a-token-of-my-own"], ids=["generated", "JUPYTER_TOKEN"])
def test_default_command_is_a_jupyterlab_that_asks_for_a_token(dirs, chosen_token):
    env = entry_env(dirs, JUPYTER_TOKEN=chosen_token)
    # Options only: the default `jupyter lab --ip=0.0.0.0 --no-browser`, plus these
    # (a later --ip wins: the test keeps it on loopback).
    # Port 0: the server takes a free port; the test reads which from the OS.
    entry = Entry(["--ip=127.0.0.1", "--port=0", "--ServerApp.port_retries=0",
                   f"--ServerApp.root_dir={dirs.root}"], env)
    try:
        line = entry.wait_for_line(r"http://127\.0\.0\.1:\d+/lab\?token=\S+", timeout=120)
        token = chosen_token or re.search(r"token=(\w+)", line).group(1)
        # The entry script exec'd jupyter, which exec'd jupyter-lab: the same process.
        port = listening_port(entry.process, describe=lambda: "".join(entry.output))
        argv = Path(f"/proc/{entry.process.pid}/cmdline").read_bytes().split(b"\0")
        # This process became `jupyter lab` (jupyter execs jupyter-lab), with the given --ip
        # instead of the default one (Jupyter refuses two).
        assert any(arg.endswith(b"/jupyter-lab") for arg in argv), argv
        assert b"--no-browser" in argv and b"--ip=127.0.0.1" in argv and b"--ip=0.0.0.0" not in argv
        base = f"http://127.0.0.1:{port}"
        assert http_status(f"{base}/api/status")[0] == 403
        assert http_status(f"{base}/api/status", token="wrong")[0] == 403
        status, body = http_status(f"{base}/api/kernelspecs", token=token)
        assert status == 200
        spec = json.loads(body)["kernelspecs"]["ferrolab"]["spec"]
        assert spec["argv"][0] == str(BINARY.resolve())
    finally:
        entry.close()


KERNEL_SCRIPT = r"""
import sys, jupyter_client
manager = jupyter_client.KernelManager(kernel_name="ferrolab")
manager.start_kernel()
print("kernel-pid", manager.provisioner.pid, flush=True)
try:
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    results = []
    def keep(message):
        if message["msg_type"] == "execute_result":
            results.append(message["content"]["data"]["text/plain"])
    code = 'format!("{} {}", 40 + 2, std::env::var("FERROLAB_BUILD_CACHE_DIR").unwrap())'
    reply = client.execute_interactive(code, timeout=300, output_hook=keep)
    print("status", reply["content"]["status"], "result", results)
    client.stop_channels()
finally:
    manager.shutdown_kernel(now=True)
"""


def test_a_rust_cell_runs_through_the_kernelspec_the_entrypoint_wrote(dirs):
    entry = Entry([str(VENV_BIN / "python"), "-c", KERNEL_SCRIPT], entry_env(dirs))
    kernel = None
    try:
        kernel = int(entry.wait_for_line(r"^kernel-pid \d+$", timeout=120).split()[1])
        status, output = entry.finish(timeout=400)
    finally:
        entry.close()
        if kernel is not None:
            kill_session(kernel)  # jupyter_client starts a kernel in a session of its own
    assert status == 0, output
    assert f"""status ok result ['"42 {dirs.cache}"']""" in output, output


# --- the Containerfile ------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list  # (KEYWORD, arguments)


def instructions(text):
    """(KEYWORD, arguments) of each instruction: continuations joined, comments dropped."""
    result, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, rest = current.partition(" ")
        result.append((keyword.upper(), rest.strip()))
        current = ""
    assert not current, f"the Containerfile ends inside a continuation: {current}"
    return result


def parse_containerfile():
    global_args, stages = {}, []
    for keyword, rest in instructions(CONTAINERFILE.read_text()):
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(name, words[0], []))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            name, _, value = rest.partition("=")
            global_args[name] = value
        else:
            stages[-1].instructions.append((keyword, rest))
    return global_args, {stage.name: stage for stage in stages}, stages


def chain(stages_by_name, stage):
    """The stage and the stages it is built FROM, oldest first."""
    result = [stage]
    while result[0].base in stages_by_name:
        result.insert(0, stages_by_name[result[0].base])
    return result


def expand(text, variables):
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), ""), text)


def walk(stages_by_name, stage):
    """(keyword, arguments expanded, variables then) along the chain, with the ENVs and ARGs applied."""
    variables = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    for step in chain(stages_by_name, stage):
        for keyword, rest in step.instructions:
            if keyword == "ARG":
                name, _, value = rest.partition("=")
                variables[name] = expand(value, variables)
            elif keyword == "ENV":
                for pair in shlex.split(rest):
                    name, _, value = pair.partition("=")
                    variables[name] = expand(value, variables)
            yield keyword, expand(rest, variables), dict(variables)


def copies(stage):
    """(flags, sources, destination) of each COPY in `stage`."""
    for keyword, rest in stage.instructions:
        if keyword == "COPY":
            words = shlex.split(rest)
            flags = [word for word in words if word.startswith("--")]
            paths = [word for word in words if not word.startswith("--")]
            yield flags, paths[:-1], paths[-1]


def variables_at_end(stages_by_name, stage):
    return list(walk(stages_by_name, stage))[-1][2]


def final(stages_by_name, stage, keyword):
    found = [(rest, variables) for kw, rest, variables in walk(stages_by_name, stage) if kw == keyword]
    assert found, f"no {keyword} in stage {stage.name}"
    return found[-1]


@pytest.fixture(scope="module")
def parsed():
    return parse_containerfile()


def runtime(parsed):
    _, _, stages = parsed
    return stages[-1]  # what `docker build` without --target produces


def ignore_patterns():
    lines = [line.strip() for line in IGNOREFILE.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def pattern_regex(pattern):
    parts = re.split(r"(\*\*|\*|\?)", pattern.strip("/"))
    wild = {"**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(wild.get(part, re.escape(part)) for part in parts))


def ignored(path, patterns):
    """Whether the build context leaves `path` out (last matching pattern wins; a pattern
    matching a parent directory matches what is inside it)."""
    parents = ["/".join(path.split("/")[: i + 1]) for i in range(path.count("/") + 1)]
    left_out = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        regex = pattern_regex(pattern.lstrip("!"))
        if any(regex.fullmatch(parent) for parent in parents):
            left_out = not keep
    return left_out


def files_under(relative):
    path = ROOT / relative
    if path.is_file():
        return [relative]
    found = []
    for folder, subfolders, names in os.walk(path):
        subfolders[:] = [name for name in subfolders if name != "target"]
        found += [os.path.relpath(os.path.join(folder, name), ROOT) for name in names]
    return found


def cargo_manifest():
    """The root Cargo.toml's rust-version, build script and workspace members (tomllib is 3.11+)."""
    text = (ROOT / "Cargo.toml").read_text()
    rust_version = re.search(r'^rust-version\s*=\s*"([^"]+)"', text, re.M).group(1)
    build = re.search(r'^build\s*=\s*"([^"]+)"', text, re.M)
    members = re.search(r"^members\s*=\s*\[([^\]]*)\]", text, re.M).group(1)
    return rust_version, build.group(1) if build else "build.rs", re.findall(r'"([^"]+)"', members)


def test_copy_sources_exist_and_the_build_context_keeps_them(parsed):
    _, _, stages = parsed
    patterns = ignore_patterns()
    # BuildKit finds the ignore file by this name, beside the Containerfile.
    assert IGNOREFILE.name == CONTAINERFILE.name + ".dockerignore"
    sources = [source for stage in stages for flags, srcs, _ in copies(stage)
               if not any(flag.startswith("--from") for flag in flags) for source in srcs]
    assert sources
    for source in sources:
        matches = glob.glob(source, root_dir=ROOT)
        assert matches, f"COPY {source}: no such path in the repository"
        for match in matches:
            for path in files_under(match):
                assert not ignored(path, patterns), f"{path} (COPY {source}) is left out of the build context"
    # The ignore file does its job: the big local folders stay out of the context.
    for path in ["target/release/ferrolab", ".venv/bin/python", ".git/HEAD", "tests/python/conftest.py"]:
        assert ignored(path, patterns), path


def test_build_stage_gets_every_file_cargo_build_reads(parsed):
    _, by_name, _ = parsed
    build = by_name["build"]
    runs = [rest for kw, rest in build.instructions if kw == "RUN"]
    assert any("cargo build --release --locked" in run for run in runs)
    workdir = [rest for kw, rest in build.instructions if kw == "WORKDIR"]
    assert workdir, "the build stage sets no WORKDIR"
    # Where each COPY puts its sources, relative to the WORKDIR: it must keep the
    # repository's layout, or Cargo.toml's paths and include_str! break.
    copied = []
    for flags, sources, dest in copies(build):
        for source in sources:
            if dest.endswith("/") or len(sources) > 1:
                placed = os.path.normpath(os.path.join(dest, os.path.basename(source)))
            else:
                placed = os.path.normpath(dest)
            assert placed == os.path.normpath(source), f"COPY {source} lands at {placed}"
            copied.append(os.path.normpath(source))

    def covered(path):
        return any(path == source or path.startswith(source + "/") for source in copied)

    _, build_script, members = cargo_manifest()
    assert "crates/buildcache" in members  # the manifest was read
    needed = {"Cargo.toml", "Cargo.lock", build_script}
    needed |= {os.path.normpath(f"{member}/Cargo.toml") for member in members}
    # Path dependencies and patches (the vendored evcxr) are read by the build too.
    path_deps = re.findall(r'\{[^}]*\bpath\s*=\s*"([^"]+)"', (ROOT / "Cargo.toml").read_text())
    assert any(p.startswith("vendor/") for p in path_deps)  # the scan found the patch
    needed |= {os.path.normpath(f"{path}/Cargo.toml") for path in path_deps}
    # Files compiled in: include_str!/include_bytes! in the kernel and the crates.
    for source in [*ROOT.glob("src/**/*.rs"), *ROOT.glob("crates/**/*.rs")]:
        for target in re.findall(r'include_(?:str|bytes)!\(\s*"([^"]+)"\s*\)', source.read_text()):
            needed.add(os.path.relpath(os.path.normpath(source.parent / target), ROOT))
    assert "README.md" in needed and "kernelspec/kernel.json" in needed  # the scan found them
    missing = sorted(path for path in needed if not covered(path))
    assert not missing, f"the build stage does not COPY {missing}"


def test_runtime_stage_keeps_cargo_rustc_and_rust_src_on_path(parsed):
    global_args, by_name, _ = parsed
    stage = runtime(parsed)
    steps = list(walk(by_name, stage))
    installs = [(rest, variables) for kw, rest, variables in steps
                if kw == "RUN" and "rustup" in rest and "rust-src" in rest]
    assert installs, "no RUN installs the toolchain with rust-src in the runtime stage's ancestry"
    install, at_install = installs[-1]
    rust_bin = f"{at_install['CARGO_HOME']}/bin"
    variables = variables_at_end(by_name, stage)
    assert rust_bin in variables["PATH"].split(":"), variables["PATH"]
    assert variables["RUSTUP_HOME"] == at_install["RUSTUP_HOME"]
    # The pinned compiler is at least the one Cargo.toml asks for.
    assert f'--default-toolchain "{at_install["RUST_VERSION"]}"' in install
    wanted = cargo_manifest()[0]
    as_tuple = lambda version: tuple(int(part) for part in version.split("."))
    assert as_tuple(at_install["RUST_VERSION"])[:2] >= as_tuple(wanted)[:2]
    # Cells link with cc; cargo writes downloaded crates to CARGO_HOME, which the
    # notebook user must own (not the root-owned toolchain directory).
    assert any(kw == "RUN" and "build-essential" in rest for kw, rest, _ in steps)
    assert variables["CARGO_HOME"].startswith(variables["HOME"] + "/")


def test_entrypoint_volume_and_shared_paths_agree(parsed):
    _, by_name, _ = parsed
    stage = runtime(parsed)
    entrypoint_rest, variables = final(by_name, stage, "ENTRYPOINT")
    entrypoint = json.loads(entrypoint_rest)
    script_copies = [(flags, dest) for flags, sources, dest in copies(stage)
                     if sources == ["container/entrypoint.sh"]]
    assert len(script_copies) == 1
    flags, script_path = script_copies[0]
    assert script_path in entrypoint, f"ENTRYPOINT {entrypoint} does not run {script_path}"
    assert "--chmod=0755" in flags or os.access(ENTRYPOINT, os.X_OK)
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    # tini, which runs the script, is installed.
    assert entrypoint[0] == "tini"
    assert any(kw == "RUN" and re.search(r"\btini\b", rest) for kw, rest, _ in walk(by_name, stage))

    script = ENTRYPOINT.read_text()

    def script_default(name):
        match = re.search(rf'"\$\{{{name}:-([^}}]+)\}}"', script)
        assert match, f"the entry script has no default for {name}"
        return match.group(1)

    volume_rest, _ = final(by_name, stage, "VOLUME")
    volumes = json.loads(volume_rest)
    assert len(volumes) == 1
    volume = volumes[0]
    cache = variables["FERROLAB_BUILD_CACHE_DIR"]
    assert os.path.dirname(cache) == volume, f"the cache {cache} is not directly inside the VOLUME {volume}"
    assert script_default("FERROLAB_BUILD_CACHE_DIR") == cache
    # The volume's root belongs to the notebook user before VOLUME freezes it.
    steps = list(walk(by_name, stage))
    volume_at = next(i for i, (kw, _, _) in enumerate(steps) if kw == "VOLUME")
    owner = re.compile(rf"install -d .*-o \"?{variables['NB_UID']}\"? .*{re.escape(volume)}$")
    assert any(kw == "RUN" and owner.search(rest) for kw, rest, _ in steps[:volume_at])
    # The binary and the kernelspec prefix the script checks are where the image puts them.
    binary = script_default("FERROLAB_BINARY")
    assert variables["FERROLAB_BINARY"] == binary
    assert any(dest == binary for flags, _, dest in copies(stage) if "--from=build" in flags)
    prefix = script_default("FERROLAB_KERNELSPEC_PREFIX")
    assert variables["FERROLAB_KERNELSPEC_PREFIX"] == prefix
    assert any(kw == "RUN" and f"ferrolab install --prefix {prefix}" in rest for kw, rest, _ in steps)
    # The hub config mounts its volumes at the same place.
    assert hub_config()["CACHE_VOLUME"] == volume


def test_runtime_runs_as_uid_1000_with_a_command_of_its_own(parsed):
    _, by_name, _ = parsed
    stage = runtime(parsed)
    user, variables = final(by_name, stage, "USER")
    assert user.split(":")[0] == "1000"
    assert any(kw == "RUN" and re.search(r"useradd .*--uid \"?1000\"? ", rest)
               for kw, rest, _ in walk(by_name, stage))
    assert variables["HOME"] == f"/home/{variables['NB_USER']}"
    # Without a CMD of its own the runtime would inherit the base image's (ubuntu's is bash).
    assert any(kw == "CMD" for kw, _ in stage.instructions)


def test_python_packages_are_the_pins_of_requirements_txt(parsed):
    _, by_name, _ = parsed
    stage = runtime(parsed)
    runs = [rest for kw, rest, _ in walk(by_name, stage) if kw == "RUN" and "/tmp/jupyter-pins.txt" in rest]
    assert len(runs) == 1
    match = re.search(r"grep -E '\^\(([^)]+)\)==' /tmp/requirements.txt", runs[0])
    assert match
    names = match.group(1).split("|")
    assert "jupyterlab" in names
    requirements = (ROOT / "requirements.txt").read_text().splitlines()
    for name in names:
        assert len([line for line in requirements if re.match(rf"{re.escape(name)}==\S+$", line)]) == 1, name
    assert f"-eq {len(names)}" in runs[0]
    # jupyterhub-singleuser, pinned.
    version = variables_at_end(by_name, stage)["JUPYTERHUB_VERSION"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert f'"jupyterhub=={version}"' in runs[0]


def test_the_cuda_variant_is_the_base_argument(parsed):
    global_args, by_name, stages = parsed
    assert "BASE" in global_args
    roots = {chain(by_name, stage)[0].base for stage in stages}
    assert roots == {"${BASE}"}, "every stage must start from the BASE argument"
    header = CONTAINERFILE.read_text()
    documented = re.search(r"--build-arg BASE=(\S+)", header)
    assert documented and re.search(r"nvidia/cuda:[\w.]+-devel-", documented.group(1))
    assert "-f container/Containerfile" in header


# --- the JupyterHub config ---------------------------------------------------


def hub_config(**env):
    """Executes container/jupyterhub_config.py as JupyterHub would; (its globals incl. 'c')."""
    config = Config()
    names = {"get_config": lambda: config, "__name__": "__main__", "__file__": str(HUB_CONFIG)}
    with pytest.MonkeyPatch.context() as patch:  # the environment is restored after
        for key, value in env.items():
            patch.setenv(key, value)
        exec(compile(HUB_CONFIG.read_text(), str(HUB_CONFIG), "exec"), names)
    return {**names, "c": config}


@pytest.fixture(autouse=True)
def _no_hub_settings(monkeypatch):
    for key in list(os.environ):
        if key.startswith("FERROLAB_HUB_") or key == "FERROLAB_IMAGE":
            monkeypatch.delenv(key)


def test_hub_config_spawns_the_image_with_dockerspawner_a_gpu_and_a_cache_per_user(parsed):
    c = hub_config()["c"]
    assert c.JupyterHub.spawner_class == "dockerspawner.DockerSpawner"
    assert c.DockerSpawner.image == "ferrolab:cuda"
    assert c.DockerSpawner.cmd == ["jupyterhub-singleuser"]
    volume = json.loads(final(parsed[1], runtime(parsed), "VOLUME")[0])[0]
    cache_volumes = [name for name, path in c.DockerSpawner.volumes.items() if path == volume]
    assert cache_volumes == ["ferrolab-cache-{username}"]
    assert c.DockerSpawner.extra_host_config == {
        "device_requests": [{"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}]}
    assert c.Spawner.environment["FERROLAB_BUILD_CACHE_MB"] == "8192"

    c = hub_config(FERROLAB_IMAGE="registry.example/ferrolab:1", FERROLAB_HUB_GPUS="none",
                   FERROLAB_HUB_CACHE="shared")["c"]
    assert c.DockerSpawner.image == "registry.example/ferrolab:1"
    assert "extra_host_config" not in c.DockerSpawner
    assert "ferrolab-cache-shared" in c.DockerSpawner.volumes
    assert hub_config(FERROLAB_HUB_GPUS="2")["c"].DockerSpawner.extra_host_config[
        "device_requests"][0]["count"] == 2


def test_hub_config_kubespawner_asks_for_a_gpu_and_keeps_the_cache_on_the_pvc():
    c = hub_config(FERROLAB_HUB_SPAWNER="kubernetes")["c"]
    assert c.JupyterHub.spawner_class == "kubespawner.KubeSpawner"
    assert c.KubeSpawner.extra_resource_limits == {"nvidia.com/gpu": "1"}
    assert c.KubeSpawner.storage_pvc_ensure is True
    claims = {volume["name"]: volume["persistentVolumeClaim"]["claimName"] for volume in c.KubeSpawner.volumes}
    mounts = {mount["name"]: mount["mountPath"] for mount in c.KubeSpawner.volume_mounts}
    assert claims == {"user-data": "{pvc_name}"}
    cache = c.Spawner.environment["FERROLAB_BUILD_CACHE_DIR"]
    assert cache.startswith(mounts["user-data"] + "/"), "the cache is not on the PVC"
    assert c.KubeSpawner.uid == 1000 and c.KubeSpawner.fs_gid == 100
    assert "DockerSpawner" not in c


@pytest.mark.parametrize("setting", ["FERROLAB_HUB_SPAWNER", "FERROLAB_HUB_CACHE"])
def test_hub_config_rejects_an_unknown_setting(setting):
    with pytest.raises(ValueError, match=setting):
        hub_config(**{setting: "nonsense"})
