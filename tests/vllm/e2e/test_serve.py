"""`vllm serve` as a real process with suffix decoding on: OpenAI-compatible
completions and chat succeed, and /metrics shows the spec-decode counters."""

from __future__ import annotations

import json
import os
import urllib.request

import pytest

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def server(tiny_model: str, tmp_path_factory: pytest.TempPathFactory, vllm_server):
    log = tmp_path_factory.mktemp("serve") / "server.log"
    args = ["--enforce-eager", "--speculative-config",
            json.dumps({"method": "suffix", "num_speculative_tokens": 8})]  # fmt: skip
    with vllm_server(tiny_model, args, log, os.environ.copy()) as base:
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
