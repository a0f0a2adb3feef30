"""Traffic for a real OpenAI-compatible server: a seeded mix of completions
and chat, streamed and not, cancelled mid-stream and malformed, sent by a
bounded asynchronous client (httpx)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

# Malformed or unusual requests, cycled through. "4xx": the server must
# refuse it with a 4xx and a message; "any": it may serve or refuse it, but
# never answer 5xx.
BAD_KINDS: dict[str, str] = {
    "too_long": "4xx",  # prompt longer than max_model_len
    "bad_temperature": "4xx",
    "bad_top_p": "4xx",
    "bad_max_tokens": "4xx",
    "unknown_model": "4xx",
    "empty_prompt": "any",
    "n_2": "any",
    "logprobs": "any",
    "stop_strings": "any",
}


@dataclass
class Request:
    index: int
    kind: str  # "completion" or "chat"
    stream: bool
    prompt: str
    max_tokens: int
    cancel_after: int | None = None  # close the stream after this many chunks
    bad: str | None = None  # a BAD_KINDS key

    @property
    def greedy(self) -> bool:
        """A plain greedy request whose text must equal the reference's."""
        return self.bad is None and self.cancel_after is None

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.kind, self.prompt, self.max_tokens)


@dataclass
class Outcome:
    index: int
    status: int  # HTTP status; 0 when the transport failed
    text: str = ""
    error: str = ""  # the server's message (4xx/5xx) or the transport error
    cancelled: bool = False
    seconds: float = 0.0
    chunks: int = 0


@dataclass
class Workload:
    requests: list[Request]
    prompts: list[str] = field(default_factory=list)


def prompts(n: int, seed: int) -> list[str]:
    """Code-like prompts with repetition, the traffic suffix decoding serves."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        name, k = f"f{i}", rng.randint(2, 9)
        body = f"def {name}(x):\n    y = x * {k}\n    return y + {i}\n\n"
        out.append(body * rng.randint(1, 3) + f"def {name}_next(x):\n")
    return out


def workload(
    n: int,
    seed: int,
    max_model_len: int,
    cancel_frac: float = 0.3,
    bad_frac: float = 0.1,
    num_prompts: int = 16,
    max_tokens: Sequence[int] = (16, 40),
) -> Workload:
    """``n`` requests: ``bad_frac`` malformed (cycling through BAD_KINDS),
    ``cancel_frac`` streamed and cancelled after a few chunks, the rest plain
    greedy requests over ``num_prompts`` prompts."""
    rng = random.Random(seed)
    texts = prompts(num_prompts, seed)
    kinds = list(BAD_KINDS)
    n_bad, n_cancel = round(n * bad_frac), round(n * cancel_frac)
    roles = ["bad"] * n_bad + ["cancel"] * n_cancel + ["plain"] * (n - n_bad - n_cancel)
    rng.shuffle(roles)
    reqs, bad_i = [], 0
    for i, role in enumerate(roles):
        r = Request(
            index=i,
            kind=rng.choice(["completion", "chat"]),
            stream=role == "cancel" or rng.random() < 0.5,
            prompt=rng.choice(texts),
            max_tokens=rng.choice(list(max_tokens)),
        )
        if role == "cancel":
            r.cancel_after = rng.randint(1, 3)
        elif role == "bad":
            r.bad = kinds[bad_i % len(kinds)]
            bad_i += 1
            if r.bad == "too_long":
                r.prompt = "a b c d " * max_model_len  # ~8 byte tokens per repeat
            elif r.bad == "empty_prompt":
                r.prompt = ""
        reqs.append(r)
    return Workload(reqs, texts)


def body(r: Request, model: str) -> dict[str, Any]:
    """The JSON body of a request (greedy unless a bad kind says otherwise)."""
    b: dict[str, Any] = {"model": model, "max_tokens": r.max_tokens, "temperature": 0.0}
    if r.kind == "chat":
        b["messages"] = [{"role": "user", "content": r.prompt}]
    else:
        b["prompt"] = r.prompt
    if r.stream:
        b["stream"] = True
    bad = {
        "bad_temperature": {"temperature": -1.0},
        "bad_top_p": {"top_p": 1.5},
        "bad_max_tokens": {"max_tokens": -5},
        "unknown_model": {"model": "no-such-model"},
        "n_2": {"n": 2, "temperature": 0.8},
        "stop_strings": {"stop": ["\n", "return"]},
        "logprobs": (
            {"logprobs": True, "top_logprobs": 3} if r.kind == "chat" else {"logprobs": 3}
        ),
    }.get(r.bad or "", {})
    return b | bad


def _path(r: Request) -> str:
    return "/v1/chat/completions" if r.kind == "chat" else "/v1/completions"


def _delta_text(r: Request, event: dict[str, Any]) -> str:
    out = []
    for choice in event.get("choices", []):
        if r.kind == "chat":
            out.append((choice.get("delta") or {}).get("content") or "")
        else:
            out.append(choice.get("text") or "")
    return "".join(out)


def _message(resp_body: str) -> str:
    try:
        doc = json.loads(resp_body)
    except ValueError:
        return resp_body[:500]
    err = doc.get("error", doc) if isinstance(doc, dict) else doc
    msg = err.get("message") if isinstance(err, dict) else None
    return str(msg or doc)[:500]


async def send(client: httpx.AsyncClient, r: Request, model: str) -> Outcome:
    t0 = time.perf_counter()
    out = Outcome(r.index, 0)
    try:
        if not r.stream:
            resp = await client.post(_path(r), json=body(r, model))
            out.status = resp.status_code
            if resp.status_code == 200:
                doc = resp.json()
                c = doc["choices"][0]
                out.text = c["message"]["content"] if r.kind == "chat" else c["text"]
            else:
                out.error = _message(resp.text)
        else:
            async with client.stream("POST", _path(r), json=body(r, model)) as resp:
                out.status = resp.status_code
                if resp.status_code != 200:
                    out.error = _message((await resp.aread()).decode(errors="replace"))
                else:
                    async for line in resp.aiter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        event = json.loads(line[len("data: ") :])
                        if "error" in event:  # an error after the stream began
                            out.status, out.error = 500, _message(line[len("data: ") :])
                            break
                        out.text += _delta_text(r, event)
                        out.chunks += 1
                        if r.cancel_after is not None and out.chunks >= r.cancel_after:
                            out.cancelled = True  # leaving the block closes the connection
                            break
    except httpx.HTTPError as e:
        out.status, out.error = 0, f"{type(e).__name__}: {e}"
    out.seconds = time.perf_counter() - t0
    return out


async def run(
    base_url: str, reqs: Sequence[Request], model: str, concurrency: int, timeout: float = 300
) -> list[Outcome]:
    """Send every request, at most ``concurrency`` at a time."""
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits) as client:

        async def one(r: Request) -> Outcome:
            async with sem:
                return await send(client, r, model)

        return list(await asyncio.gather(*(one(r) for r in reqs)))
