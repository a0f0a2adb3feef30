"""`vllm serve` as a real process with suffix decoding on: OpenAI-compatible
completions and chat succeed, and /metrics shows the spec-decode counters."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(proc: subprocess.Popen, base: str, log: Path, timeout: float = 240) -> str:
    """Wait for a `vllm serve` process to answer /health; fail with its log."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                if r.status == 200:
                    return base
        except OSError:
            time.sleep(1)
    pytest.fail(f"vllm serve did not become healthy:\n{log.read_text()[-4000:]}")


@contextlib.contextmanager
def serving(cmd: list[str], base: str, log: Path, env: dict[str, str]) -> Iterator[str]:
    """Run `vllm serve` (output to ``log``) until it is healthy; stop it after."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            yield wait_healthy(proc, base, log)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def server(tiny_model: str, tmp_path_factory: pytest.TempPathFactory):
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    cmd = [
        sys.executable,
        str(Path(__file__).with_name("vllm_cli.py")),
        "serve",
        tiny_model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        "512",
        "--gpu-memory-utilization",
        "0.1",
        "--enforce-eager",
        "--served-model-name",
        "tiny",
        "--speculative-config",
        json.dumps({"method": "suffix", "num_speculative_tokens": 8}),
    ]
    with serving(cmd, f"http://127.0.0.1:{port}", log, os.environ.copy()) as base:
        yield base, log


def test_completions_chat_and_metrics(server) -> None:
    openai = pytest.importorskip("openai")
    base, log = server
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused")
    comp = client.completions.create(
        model="tiny", prompt="abcabcabcabcabc", max_tokens=32, temperature=0
    )
    assert comp.choices[0].text and comp.usage.completion_tokens > 0
    chat = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "repeat: xyzxyzxyzxyz"}],
        max_tokens=32,
        temperature=0,
    )
    assert chat.choices[0].message.content is not None
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        metrics = r.read().decode()
    counters = {
        line.split("{")[0].split(" ")[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("vllm:spec_decode_num_") and "_created" not in line
    }
    assert counters.get("vllm:spec_decode_num_drafts_total", 0) > 0, counters
    assert counters.get("vllm:spec_decode_num_accepted_tokens_total", 0) > 0, counters
    assert "arctic_inference_vllm" in log.read_text()  # the one start-up line
