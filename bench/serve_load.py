"""A real ``vllm serve`` with speculative decoding under load and faults.

    python bench/serve_load.py                                  # 2000 requests at c=64
    python bench/serve_load.py --requests 200 --concurrency 16  # the CI size

For each method (``suffix``, and ``arctic``: a speculator head plus suffix
decoding) a server runs on loopback and gets seeded traffic at a bounded
concurrency: completions and chat, streamed and not; ``--cancel-frac``
cancelled by the client mid-stream; ``--bad-frac`` malformed or unusual
(prompt past max_model_len, invalid sampling values, unknown model, empty
prompt, n > 1, logprobs, stop strings). Checks, per method:

- no answer is a 5xx or a broken connection, and every malformed request
  that must fail gets a 4xx with a message;
- every completed plain greedy request has the text of the same request sent
  alone to a server without speculation;
- afterwards the server still answers, its suffix cache holds no request
  but the last one (read through vLLM's dev-mode ``/collective_rpc`` and
  ``arctic_inference_vllm.diagnostics.SuffixCacheInspector``, which checks
  the trees' invariants too) and its memory (RSS of the server's processes)
  grew by at most ``--rss-growth``.

Results: ``<out-dir>/serve_load.{md,json}``; exit 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from benchlib.load import BAD_KINDS, Outcome, Request, run, workload
from benchlib.paths import RESULTS
from benchlib.serve import Server, rss_bytes, serving
from benchlib.stamps import stamped_markdown, version_stamp, write_results
from benchlib.tables import fmt, median, table

from arctic_inference_vllm.envs import EXTRAS_ENV
from arctic_inference_vllm.testing import cpu_dtype

METHODS = ("suffix", "arctic", "none")  # none: the control, no speculation
MODEL_NAME = "served"
# For tokenizers without one (chat requests need a template).
PLAIN_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant: "
)


def spec_config(method: str, k: int, speculator: str | None) -> dict[str, Any] | None:
    if method == "none":
        return None
    if method == "suffix":
        return {"method": "suffix", "num_speculative_tokens": k}
    return {
        "method": "arctic",
        "model": speculator,
        "num_speculative_tokens": 3,
        "enable_suffix_decoding": True,
        "disable_by_batch_size": 64,
    }


def random_speculator(model: str, out: Path) -> str:
    """An untrained MLP speculator head for ``model`` (its drafts are mostly
    rejected, which the greedy check must survive)."""
    from arctic_inference_core.speculator import (
        SpeculatorConfig,
        build_speculator,
        save_speculator,
    )

    cfg = json.loads((Path(model) / "config.json").read_text())
    head = build_speculator(
        SpeculatorConfig(
            method="mlp",
            n_predict=3,
            input_hidden_dim=cfg["hidden_size"],
            inner_dim=64,
            vocab_size=cfg["vocab_size"],
        )
    )
    save_speculator(head, out)
    return str(out)


def server_args(a: argparse.Namespace, model: str, spec: dict[str, Any] | None) -> list[str]:
    args = ["--enforce-eager", "--dtype", a.dtype, "--seed", "0"]
    if not _has_chat_template(Path(model)):
        args += ["--chat-template", PLAIN_CHAT_TEMPLATE]
    if spec is not None:
        args += [
            "--speculative-config", json.dumps(spec),
            "--worker-extension-cls", "arctic_inference_vllm.diagnostics.SuffixCacheInspector",
        ]  # fmt: skip
    return args


def _has_chat_template(model: Path) -> bool:
    tok_cfg = model / "tokenizer_config.json"
    in_cfg = tok_cfg.is_file() and "chat_template" in json.loads(tok_cfg.read_text())
    return in_cfg or (model / "chat_template.jinja").is_file()


def server_env(method: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env["VLLM_SERVER_DEV_MODE"] = "1"  # /collective_rpc, for the cache check
    if method == "arctic":
        env[EXTRAS_ENV] = "1"
    return env


def cache_state(server: Server) -> dict[str, Any]:
    req = urllib.request.Request(
        f"{server.base_url}/collective_rpc",
        data=json.dumps({"method": "suffix_cache_state"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return dict(json.loads(r.read())["results"][0])


def references(a: argparse.Namespace, reqs: Sequence[Request], log_dir: Path) -> dict[Any, str]:
    """The text of each distinct plain greedy request, each sent alone to a
    server without speculation."""
    keys = sorted({r.key for r in reqs if r.greedy})
    first = {r.key: r for r in reversed(reqs) if r.greedy}
    out: dict[Any, str] = {}
    with serving(a.model, server_args(a, a.model, None), log_dir / "reference.log",
                 server_env(None), served_name=MODEL_NAME,
                 max_model_len=a.max_model_len) as server:  # fmt: skip
        for key in keys:
            r = first[key]
            alone = Request(r.index, r.kind, False, r.prompt, r.max_tokens)
            (o,) = asyncio.run(run(server.base_url, [alone], MODEL_NAME, 1))
            if o.status != 200:
                raise RuntimeError(f"the reference server refused {key}: {o.status} {o.error}")
            out[key] = o.text
    return out


def _first_difference(x: str, y: str) -> int:
    return next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))


def check(
    reqs: Sequence[Request], outs: Sequence[Outcome], refs: dict[Any, str]
) -> tuple[dict[str, bool], dict[str, Any]]:
    """The per-request checks; their details (counts, the failing requests)."""
    five = [o for o in outs if o.status == 0 or o.status >= 500]
    must_fail = [(r, o) for r, o in zip(reqs, outs) if r.bad and BAD_KINDS[r.bad] == "4xx"]
    not_refused = [
        (r.bad, o.status, o.error) for r, o in must_fail if not (400 <= o.status < 500 and o.error)
    ]
    compared, differ = 0, []
    for r, o in zip(reqs, outs):
        if r.greedy and o.status == 200:
            compared += 1
            ref = refs[r.key]
            if o.text != ref:
                differ.append({"index": r.index, "at": _first_difference(o.text, ref)})
    plain = sum(r.greedy for r in reqs)
    checks = {
        "no_5xx": not five,
        "bad_requests_refused": not not_refused,
        "greedy_identical": not differ and compared == plain,
    }
    details = {
        "statuses": _count(str(o.status) for o in outs),
        "bad_statuses": {
            k: _count(str(o.status) for r, o in zip(reqs, outs) if r.bad == k) for k in BAD_KINDS
        },
        "cancelled": sum(o.cancelled for o in outs),
        "greedy_compared": compared,
        "greedy_requests": plain,
        "greedy_differ": differ[:20],
        "five_xx": [(o.index, o.status, o.error) for o in five[:20]],
        "not_refused": not_refused[:20],
        "latency_p50_s": median([o.seconds for o in outs]),
    }
    return checks, details


def _count(items: Iterable[str]) -> dict[str, int]:
    """Occurrences per item, sorted by item (the report's column order)."""
    return dict(sorted(Counter(items).items()))


def run_method(
    a: argparse.Namespace, method: str, reqs: Sequence[Request], refs: dict[Any, str], log_dir: Path
) -> dict[str, Any]:
    speculator = a.speculator
    if method == "arctic" and speculator is None:
        speculator = random_speculator(a.model, log_dir / "random-speculator")
    spec = spec_config(method, a.num_speculative_tokens, speculator)
    with serving(a.model, server_args(a, a.model, spec), log_dir / f"{method}.log",
                 server_env(method), served_name=MODEL_NAME,
                 max_model_len=a.max_model_len) as server:  # fmt: skip
        warm = [Request(-1, "completion", False, "def warm(x):\n", 8)]
        asyncio.run(run(server.base_url, warm, MODEL_NAME, 1))
        rss_before = rss_bytes(server.pid)
        outs = asyncio.run(run(server.base_url, reqs, MODEL_NAME, a.concurrency))
        # One more request: the server still answers, and its steps release
        # every request that left the batch (finished or aborted).
        probe = [Request(-2, "chat", True, "def probe(x):\n", 8)]
        (after,) = asyncio.run(run(server.base_url, probe, MODEL_NAME, 1))
        rss_after = rss_bytes(server.pid)
        state = cache_state(server) if spec is not None else {"proposer": None, "active": 0}
    checks, details = check(reqs, outs, refs)
    checks["alive_after"] = after.status == 200 and bool(after.text)
    checks["cache_released"] = state.get("active") is not None and state["active"] <= 1
    growth = (rss_after - rss_before) / rss_before if rss_before else float("nan")
    checks["memory_bounded"] = bool(rss_before) and growth <= a.rss_growth
    return {
        "method": method,
        "spec": spec,
        "checks": checks,
        "details": details,
        "cache_state": state,
        "rss_before": rss_before,
        "rss_after": rss_after,
        "rss_growth": growth,
        "seconds": sum(o.seconds for o in outs),
    }


def report(a: argparse.Namespace, n_plain: int, results: list[dict[str, Any]]) -> str:
    mib = 1 << 20
    lines = [
        "# vllm serve under load and faults",
        "",
        f"{a.requests} requests at concurrency {a.concurrency} ({a.cancel_frac:.0%} cancelled "
        f"mid-stream, {a.bad_frac:.0%} malformed or unusual, {n_plain} plain greedy), model "
        f"`{Path(a.model).name}` ({a.dtype}), max_model_len {a.max_model_len}, seed {a.seed}.",
        "",
    ]
    rows = []
    for r in results:
        d = r["details"]
        rows.append([
            r["method"],
            " ".join(f"{k}:{v}" for k, v in d["statuses"].items()),
            d["cancelled"],
            f"{d['greedy_compared'] - len(d['greedy_differ'])}/{d['greedy_requests']}",
            r["cache_state"].get("active"),
            f"{fmt(r['rss_before'] / mib, 0)} -> {fmt(r['rss_after'] / mib, 0)}",
            ", ".join(k for k, ok in r["checks"].items() if not ok) or "all ok",
        ])  # fmt: skip
    header = ["method", "statuses", "cancelled", "greedy identical", "active after",
              "RSS MiB", "failed checks"]  # fmt: skip
    lines += table(header, rows)
    lines += ["", "Malformed or unusual requests, status counts per kind:", ""]
    for r in results:
        kinds = r["details"]["bad_statuses"]
        lines.append(
            f"- {r['method']}: "
            + "; ".join(
                f"{k} {' '.join(f'{s}x{n}' for s, n in v.items())}" for k, v in kinds.items()
            )
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model directory (default: bench-lm)")
    p.add_argument("--methods", default="suffix,arctic")
    p.add_argument("--speculator", default=None, help="arctic head (default: a random one)")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--cancel-frac", type=float, default=0.3)
    p.add_argument("--bad-frac", type=float, default=0.1)
    p.add_argument("--num-speculative-tokens", type=int, default=16)
    p.add_argument("--max-model-len", type=int, default=1024)
    p.add_argument("--rss-growth", type=float, default=0.25, help="largest allowed RSS growth")
    p.add_argument("--dtype", default=None, help="served dtype (default: the CPU rule)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    methods = [m for m in a.methods.split(",") if m]
    if not methods or set(methods) - set(METHODS):
        p.error(f"--methods must name some of {', '.join(METHODS)}")
    if a.requests < 1 or a.concurrency < 1:
        p.error("--requests and --concurrency must be >= 1")
    if not (0 <= a.cancel_frac and 0 <= a.bad_frac and a.cancel_frac + a.bad_frac <= 1):
        p.error("--cancel-frac and --bad-frac must be >= 0 and add up to at most 1")
    a.dtype = a.dtype or cpu_dtype()
    if a.model is None:
        from benchlib.assets import bench_model_dir

        a.model = str(bench_model_dir(a.dtype))
    stamp = version_stamp()
    log_dir = a.out_dir / "serve_load_logs"
    reqs = workload(a.requests, a.seed, a.max_model_len, a.cancel_frac, a.bad_frac).requests
    refs = references(a, reqs, log_dir)
    results = [run_method(a, m, reqs, refs, log_dir) for m in methods]
    md = report(a, sum(r.greedy for r in reqs), results)
    doc = {"args": vars(a) | {"out_dir": str(a.out_dir)}, "results": results}
    write_results(a.out_dir, "serve_load", md, doc, stamp)
    print(stamped_markdown(md, stamp))
    ok = all(all(r["checks"].values()) for r in results)
    if not ok:
        print(f"FAILED checks; server logs in {log_dir}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
