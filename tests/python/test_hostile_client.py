"""A hostile client: 10,000 malformed, truncated, oversized, wrongly signed and
replayed messages to a live kernel over ZeroMQ. Afterwards the kernel must
answer a valid execute correctly, must have executed none of the bad ones
(each would append to a marker file through `!echo`), and its log must not
contain the key.

Below the signature: a local user without the key speaks raw ZMTP to each of
the five sockets, announcing a 2^62-byte frame or sending a 300 MB one. The
kernel must drop those connections at the frame header, keep running, keep
its memory, and still run cells, over tcp and ipc."""

import hashlib
import hmac
import json
import random
import socket
import struct
import time
import uuid

import psutil
import zmq

from conftest import Kernel

PER_KIND = 2000


def frames_for(key, code, msg_id=None, session="mallory"):
    header = {"msg_id": msg_id or uuid.uuid4().hex, "msg_type": "execute_request",
              "username": "mallory", "session": session, "date": "2026-01-01T00:00:00Z",
              "version": "5.3"}
    parts = [json.dumps(p).encode() for p in (
        header, {}, {}, {"code": code, "silent": False, "store_history": False,
                         "user_expressions": {}, "allow_stdin": False, "stop_on_error": False})]
    signature = hmac.new(key, b"".join(parts), hashlib.sha256).hexdigest().encode()
    return [b"<IDS|MSG>", signature, *parts]


def test_ten_thousand_bad_messages_execute_nothing_and_leave_the_kernel_working(tmp_path):
    log_file = tmp_path / "kernel.log"
    bad_marker = tmp_path / "bad-ran"
    good_marker = tmp_path / "good-ran"
    running = Kernel(env={"FERROLAB_LOG_FILE": str(log_file), "FERROLAB_LOG": "info"})
    rng = random.Random(8)
    try:
        key = running.manager.session.key
        info = running.manager.get_connection_info()
        context = zmq.Context.instance()
        shell = context.socket(zmq.DEALER)
        shell.setsockopt(zmq.LINGER, 0)
        shell.connect(f"tcp://{info['ip']}:{info['shell_port']}")
        control = context.socket(zmq.DEALER)
        control.setsockopt(zmq.LINGER, 0)
        control.connect(f"tcp://{info['ip']}:{info['control_port']}")
        bad_code = f"!echo bad >> {bad_marker}"

        # One valid execute, which then gets replayed.
        valid = frames_for(key, f"!echo good >> {good_marker}")
        shell.send_multipart(valid)
        deadline = time.monotonic() + 60
        while not good_marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert good_marker.read_text() == "good\n"

        sent = {"malformed": 0, "truncated": 0, "oversized": 0, "wrongly signed": 0, "replayed": 0}
        for i in range(PER_KIND):
            socket = shell if i % 2 else control
            # Malformed: random frames, sometimes with a delimiter, bad JSON under a valid MAC.
            choice = i % 3
            if choice == 0:
                frames = [rng.randbytes(rng.randrange(0, 40)) for _ in range(rng.randrange(1, 8))]
            elif choice == 1:
                frames = [b"<IDS|MSG>"] + [rng.randbytes(rng.randrange(0, 40)) for _ in range(5)]
            else:
                parts = [b"{not json", b"{}", b"{}", b"[]"]
                frames = [b"<IDS|MSG>",
                          hmac.new(key, b"".join(parts), hashlib.sha256).hexdigest().encode(), *parts]
            socket.send_multipart(frames)
            sent["malformed"] += 1
            # Truncated: a correctly signed bad execute missing frames.
            whole = frames_for(key, bad_code)
            socket.send_multipart(whole[: rng.randrange(1, 5)])
            sent["truncated"] += 1
            # Oversized: 64 KiB to 1 MiB of content under a wrong signature.
            big = frames_for(b"wrong-key", bad_code + " #" + "x" * rng.randrange(1 << 16, 1 << 20))
            socket.send_multipart(big)
            sent["oversized"] += 1
            # Wrongly signed: right shape, random or case-changed signature.
            forged = frames_for(key, bad_code)
            forged[1] = forged[1].upper() if i % 2 else rng.randbytes(32).hex().encode()
            socket.send_multipart(forged)
            sent["wrongly signed"] += 1
            # Replayed: the exact valid message again.
            shell.send_multipart(valid)
            sent["replayed"] += 1
        assert sum(sent.values()) == 5 * PER_KIND == 10_000

        # The kernel still answers, correctly, and ran none of the bad messages.
        assert running.execute("40 + 2", timeout=120).result_text() == "42"
        assert running.execute(f"!cat {good_marker}").stream_text() == "good\n"
        assert not bad_marker.exists(), "a bad message was executed"
        assert good_marker.read_text() == "good\n", "a replayed message was executed"
        log = log_file.read_text(errors="replace")
        assert key.decode() not in log
        assert "signature" in log
        # Rate-limited: ten drops a minute per channel in full, then they are counted.
        assert log.count("dropped a message") <= 2 * 10, log.count("dropped a message")
        assert "counting the rest without logging each" in log
        print(f"hostile client: {sent} -> 0 executed; log {log_file.stat().st_size} bytes")
        shell.close()
        control.close()
    finally:
        running.shutdown()


# ZMTP 3.0: greeting with the NULL mechanism, then a READY command.
GREETING = b"\xff" + b"\0" * 8 + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\0") + b"\0" * 32
CHANNELS = {"shell_port": b"DEALER", "control_port": b"DEALER", "stdin_port": b"DEALER",
            "iopub_port": b"SUB", "hb_port": b"REQ"}
MiB = 1 << 20


def ready(socket_type):
    body = b"\x05READY" + bytes([11]) + b"Socket-Type" + struct.pack(">I", len(socket_type)) + socket_type
    return bytes([0x04, len(body)]) + body


def raw_connection(info, port_name):
    if info["transport"] == "ipc":
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.connect(f"{info['ip']}-{info[port_name]}")
    else:
        connection = socket.create_connection((info["ip"], info[port_name]))
    connection.settimeout(30)
    return connection


def closed_by_kernel(connection):
    """True once the kernel has closed the connection (its greeting may come first)."""
    try:
        while connection.recv(65536):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def announce_huge_frame(info, port_name):
    connection = raw_connection(info, port_name)
    try:
        connection.sendall(GREETING)
        connection.sendall(bytes([0x06]) + struct.pack(">Q", 1 << 62))
        return closed_by_kernel(connection)
    finally:
        connection.close()


def send_300_mb_frame(info, port_name):
    """Returns how many of the 300 MB the kernel took before it hung up."""
    connection = raw_connection(info, port_name)
    sent = 0
    try:
        connection.sendall(GREETING + ready(CHANNELS[port_name]))
        connection.sendall(bytes([0x02]) + struct.pack(">Q", 300 * MiB))
        chunk = b"\0" * MiB
        try:
            while sent < 300 * MiB:
                connection.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert closed_by_kernel(connection), f"{port_name}: the kernel kept the connection"
        return sent
    finally:
        connection.close()


def rss_mib(running):
    return psutil.Process(running.manager.provisioner.process.pid).memory_info().rss / MiB


def test_frames_over_the_limit_are_refused_on_every_socket_and_the_kernel_lives_on(tmp_path):
    log_file = tmp_path / "kernel.log"
    running = Kernel(env={"FERROLAB_LOG_FILE": str(log_file), "FERROLAB_LOG": "info"})
    try:
        assert running.execute("let kept = 7;\nkept").result_text() == "7"
        info = running.manager.get_connection_info()
        before = rss_mib(running)
        for port_name in CHANNELS:
            assert announce_huge_frame(info, port_name), f"{port_name}: 2^62 header not refused"
            assert running.manager.is_alive(), f"{port_name}: the kernel died on a 2^62 header"
            taken = send_300_mb_frame(info, port_name)
            assert taken < 300 * MiB, f"{port_name}: the kernel read a whole 300 MB frame"
            growth = rss_mib(running) - before
            assert growth < 64, f"{port_name}: kernel RSS grew {growth:.0f} MiB"
        # A large frame under the limit is read, refused for its signature, and freed.
        context = zmq.Context.instance()
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(f"tcp://{info['ip']}:{info['shell_port']}")
        header = json.dumps({"msg_id": "big", "msg_type": "execute_request"}).encode()
        dealer.send_multipart([b"<IDS|MSG>", b"0" * 64, header, b"{}", b"{}", b"\0" * (200 * MiB)])
        deadline = time.monotonic() + 60  # a liveness bound, not a timing goal
        while "shell: dropped a message" not in log_file.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        while rss_mib(running) - before >= 64 and time.monotonic() < deadline:
            time.sleep(0.1)
        after = rss_mib(running)
        dealer.close()
        print(f"kernel RSS {before:.0f} MiB before, {after:.0f} MiB after ten refused frames "
              "and a 200 MB unsigned message")
        assert after - before < 64, f"memory did not come back: {before:.0f} -> {after:.0f} MiB"
        assert running.execute("kept + 35").result_text() == "42"
        assert running.execute("!echo still here").stream_text() == "still here\n"
    finally:
        running.shutdown()


def test_ipc_sockets_refuse_a_huge_frame_header_and_keep_working():
    running = Kernel(transport="ipc")
    try:
        info = running.manager.get_connection_info()
        for port_name in CHANNELS:
            assert announce_huge_frame(info, port_name), f"{port_name}: 2^62 header not refused"
            assert running.manager.is_alive(), f"{port_name}: the kernel died on a 2^62 header"
        assert running.execute("!echo over ipc").stream_text() == "over ipc\n"
    finally:
        running.shutdown()
