"""`%gpu` through a real kernel: with no nvidia-smi it explains what to check;
with an nvidia-smi on PATH (a stand-in script printing output captured from real
drivers) it shows the table, MIG devices and CUDA_VISIBLE_DEVICES, and
`%gpu watch` keeps one display updated."""

import os
import shutil
import stat
import time

import pytest

from conftest import Kernel

FAKE_NVIDIA_SMI = r"""#!/bin/sh
case "$1" in
  --query-gpu=*)
    echo "0, NVIDIA A100-SXM4-40GB, GPU-11111111-2222-3333-4444-555555555555, 13, 40960, [N/A], 30, 55.10, 400.00, 535.104.05, Enabled"
    echo "1, Tesla T4, GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee, 1024, 15360, 37, 41, 28.50, 70.00, 535.104.05, [N/A]"
    ;;
  -L)
    echo "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-11111111-2222-3333-4444-555555555555)"
    echo "  MIG 3g.20gb     Device  0: (UUID: MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee)"
    echo "GPU 1: Tesla T4 (UUID: GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee)"
    ;;
  "")
    echo "| NVIDIA-SMI 535.104.05             Driver Version: 535.104.05   CUDA Version: 12.2     |"
    ;;
  *) exit 2 ;;
esac
"""


@pytest.fixture(scope="module")
def fake_gpu_kernel(tmp_path_factory):
    bin_dir = tmp_path_factory.mktemp("fake-nvidia")
    script = bin_dir / "nvidia-smi"
    script.write_text(FAKE_NVIDIA_SMI)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    running = Kernel(env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    yield running
    running.shutdown()


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has a real nvidia-smi")
def test_without_nvidia_smi_it_says_what_to_check(kernel):
    outcome = kernel.execute("%gpu")
    assert outcome.status == "ok"
    text = outcome.result_text()
    assert "No GPU visible" in text and "nvidia-smi" in text and "Change runtime type" in text


def test_table_with_mig_and_visible_devices(fake_gpu_kernel):
    fake_gpu_kernel.execute("%env CUDA_VISIBLE_DEVICES=1")
    outcome = fake_gpu_kernel.execute("%gpu")
    assert outcome.status == "ok", outcome.outputs
    data = outcome.of_type("execute_result")[0]["data"]
    text, html = data["text/plain"], data["text/html"]
    assert "NVIDIA A100-SXM4-40GB" in text and "Tesla T4" in text
    assert "13 / 40960 MiB" in text and "1024 / 15360 MiB" in text
    assert "└ MIG 3g.20gb (device 0)" in text
    assert "Driver 535.104.05 · CUDA 12.2 · CUDA_VISIBLE_DEVICES: 1" in text
    assert "<table>" in html and "<td>Tesla T4</td>" in html


def test_watch_updates_one_display(fake_gpu_kernel):
    outcome = fake_gpu_kernel.execute("%gpu watch 0.2 --count 2")
    kinds = [kind for kind, _ in outcome.outputs]
    assert kinds == ["display_data", "update_display_data", "update_display_data"], kinds
    ids = {content["transient"]["display_id"] for _, content in outcome.outputs}
    assert len(ids) == 1
    assert fake_gpu_kernel.execute("%gpu watch soon").error()["ename"] == "UsageError"


def test_banner_names_the_gpu(fake_gpu_kernel):
    # The start-up probe runs in the background: ask until the banner carries its
    # GPU line (a liveness bound; a kernel that never probes fails here).
    deadline = time.monotonic() + 60
    while True:
        banner = fake_gpu_kernel.client.kernel_info(reply=True, timeout=30)["content"]["banner"]
        if "(%gpu for details)" in banner:
            break
        assert time.monotonic() < deadline, f"the banner never named a GPU: {banner!r}"
        time.sleep(0.1)
    assert banner.startswith("ferrolab ")
    if not os.path.isdir("/proc/driver/nvidia/gpus"):
        assert "GPUs: NVIDIA A100-SXM4-40GB, Tesla T4 (%gpu for details)" in banner
