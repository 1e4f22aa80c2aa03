"""A hostile client: 10,000 malformed, truncated, oversized, wrongly signed and
replayed messages to a live kernel over ZeroMQ. Afterwards the kernel must
answer a valid execute correctly, must have executed none of the bad ones
(each would append to a marker file through `!echo`), and its log must not
contain the key."""

import hashlib
import hmac
import json
import random
import time
import uuid

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
