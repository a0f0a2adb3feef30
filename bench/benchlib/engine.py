"""The vLLM engine the serving benchmarks share (``bench/vllm_compare.py``,
``bench/step_profile.py``): the speculation methods and their configs, the
model and prompts to serve, the engine built in a worker process, and vLLM's
spec-decode counters.

Worker side: :func:`build_engine` takes the worker's parsed arguments
(``worker`` the method, ``prompts_file``, ``model``, ``k``, ``depth``,
``speculator``, ``max_tokens``, ``max_model_len``, ``gpu_memory_utilization``,
``enforce_eager``, ``cudagraph_mode``, and optionally ``suffix_budget``,
``cost_curve``, ``async_scheduling`` and ``dtype``). Parent side: :func:`resolve_model`, :func:`load_prompts`
and :func:`worker_env`; the process itself is run by
:func:`benchlib.worker.run_worker_process`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from arctic_inference_core.traces import read_prompt_records
from arctic_inference_vllm.testing import memory_kwargs
from benchlib.paths import AGENTIC_TRACES, BENCH_LM

METHODS = ("none", "ngram", "suffix-ai", "suffix", "suffix-unshared", "arctic", "arctic+suffix")
DEFAULT_METHODS = ("none", "ngram", "suffix")  # arctic ones need --speculator
# vLLM's own suffix proposer over Snowflake's arctic-inference package (not
# this core): the worker imports it from --arctic-path with no plugin loaded
REFERENCE_SUFFIX = "suffix-ai"
# run this core's draft policy; "suffix-unshared" is "suffix" without live sharing
POLICY_METHODS = ("suffix", "suffix-unshared", "arctic", "arctic+suffix")
EDIT_FAMILIES = ("edit_file", "edit_diff")
EXTRAS_ENV = "ARCTIC_INFERENCE_VLLM_EXTRAS"  # the adapter's opt-in switch
ADAPTER_PLUGIN = "arctic_inference_core"  # this adapter's vllm.general_plugins entry point
INSPECTOR = "benchlib.inspector.PolicyInspector"  # worker extension (draft policy state)


# --------------------------------------------------------------------------- parent


def resolve_model(arg: str | None, out_dir: Path) -> tuple[str, str]:
    """(path, description) of the model to serve: ``arg``, else
    ``../shared/bench-lm``, else a tiny random Llama built in ``out_dir``."""
    if arg:
        return arg, arg
    if (BENCH_LM / "config.json").is_file():
        return str(BENCH_LM), "bench-lm (27M-parameter code model, ../shared/bench-lm)"
    from arctic_inference_vllm.testing import build_tiny_llama

    path = out_dir / "tiny-llama"
    if not (path / "config.json").is_file():
        build_tiny_llama(path)
    return str(path), "tiny random Llama built on the fly (no ../shared/bench-lm)"


def load_prompts(traces: str | None, n: int) -> tuple[list[str], str]:
    """Up to ``n`` prompts and where they came from: the ``edit_*`` prompts of
    ``traces`` (else ``../shared`` traces) from the end of the file, else
    synthetic ones."""
    if traces:
        path = Path(traces)
    elif AGENTIC_TRACES.is_file():
        path = AGENTIC_TRACES
    else:
        from benchlib.synthetic import generate

        rows = generate(max(n, 12), seed=0)
        prompts = [r["prompt"] for r in rows if r["family"] != "new_file"]
        return prompts[:n], "synthetic stdlib traces"
    rows = read_prompt_records(path)
    # Held-out-looking slice from the end, mixing the edit families.
    picked = [r["prompt"] for r in reversed(rows) if r["family"] in EDIT_FAMILIES]
    return picked[:n], str(path)


def worker_env(method: str, arctic_path: str | None = None) -> dict[str, str]:
    """The environment of a worker serving ``method`` (the arctic methods are
    an opt-in extra of the adapter). ``suffix-ai`` imports arctic-inference
    from ``arctic_path`` (a ``pip install --target`` directory, or its
    package's parent) and loads neither this adapter's vLLM plugin nor
    arctic-inference's own (``VLLM_PLUGINS`` lists the other plugins, for
    example the 8B-cost stand-in's; an empty list matches nothing)."""
    env = dict(os.environ)
    if method.startswith("arctic"):
        env[EXTRAS_ENV] = "1"
    if method == REFERENCE_SUFFIX:
        if not arctic_path:
            raise ValueError(f"method {REFERENCE_SUFFIX!r} needs --arctic-path DIR")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (arctic_path, env.get("PYTHONPATH")) if p)
        env["VLLM_PLUGINS"] = ",".join(other_plugins())
    return env


def other_plugins() -> list[str]:
    """vLLM general plugins other than this adapter and arctic-inference's own
    (the stand-in's among them); an allowlist of these loads neither."""
    from importlib.metadata import entry_points

    names = {e.name for e in entry_points(group="vllm.general_plugins")}
    return sorted(names - {ADAPTER_PLUGIN, "arctic_inference"})


def spec_config(
    method: str, k: int, depth: int, speculator: str | None = None
) -> dict[str, Any] | None:
    """vLLM's ``speculative_config`` for ``method`` (None: no speculation)."""
    if method == "none":
        return None
    if method == "ngram":
        return {
            "method": "ngram",
            "num_speculative_tokens": k,
            "prompt_lookup_min": 2,
            "prompt_lookup_max": 5,
        }
    if method.startswith("arctic"):
        # the speculator drafts its n_predict tokens; with suffix, suffix
        # drafts (up to k) win when their score says they will be accepted
        if speculator is None:
            raise ValueError(f"method {method!r} needs a speculator directory")
        with_suffix = method == "arctic+suffix"
        n_predict = json.loads((Path(speculator) / "config.json").read_text())["n_predict"]
        return {
            "method": "arctic",
            "model": speculator,
            "enable_suffix_decoding": with_suffix,
            "num_speculative_tokens": k if with_suffix else n_predict,
            "suffix_decoding_max_tree_depth": depth,
        }
    if method not in ("suffix", "suffix-unshared", REFERENCE_SUFFIX):
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    return {
        "method": "suffix",
        "num_speculative_tokens": k,
        "suffix_decoding_max_tree_depth": depth,
    }


# --------------------------------------------------------------------------- worker


def spec_counters(llm: Any) -> dict[str, float]:
    """vLLM's cumulative spec-decode counters: drafts, accepted and draft tokens."""
    out = {"drafts": 0.0, "accepted": 0.0, "draft_tokens": 0.0}
    names = {
        "vllm:spec_decode_num_drafts": "drafts",
        "vllm:spec_decode_num_accepted_tokens": "accepted",
        "vllm:spec_decode_num_draft_tokens": "draft_tokens",
    }
    for m in llm.get_metrics():
        if m.name in names and hasattr(m, "value"):
            out[names[m.name]] += m.value
    return out


def most_running(args: argparse.Namespace) -> int:
    """Most requests an engine of ``args`` runs at once."""
    c = getattr(args, "concurrency", 1)
    return max(c) if isinstance(c, (list, tuple)) else int(c)


def build_engine(args: argparse.Namespace, **overrides: Any) -> tuple[Any, Any, list[Any]]:
    """The engine for ``args.worker`` (a method), its tokenizer, and the
    prompts of ``args.prompts_file`` as token prompts that leave room for
    ``max_tokens``. ``overrides``: more engine arguments."""
    from transformers import AutoTokenizer
    from vllm import LLM, TokensPrompt

    prompts = json.loads(Path(args.prompts_file).read_text())
    tok = AutoTokenizer.from_pretrained(args.model)
    room = args.max_model_len - args.max_tokens - 1
    token_prompts = [
        TokensPrompt(
            prompt_token_ids=([tok.bos_token_id or 0] + tok.encode(p, add_special_tokens=False))[
                -room:
            ]
        )
        for p in prompts
    ]
    extra: dict[str, Any] = {}
    ours: dict[str, Any] = {}
    if getattr(args, "suffix_budget", None) is not None:
        ours["suffix_step_token_budget"] = args.suffix_budget
    if getattr(args, "cost_curve", None):
        ours["suffix_step_cost_curve"] = str(args.cost_curve)
    if args.worker == "suffix-unshared":
        ours["suffix_share_active_responses"] = False
    if ours:
        extra["additional_config"] = {"arctic_inference": ours}
    if args.worker in POLICY_METHODS:
        extra["worker_extension_cls"] = INSPECTOR
    if getattr(args, "async_scheduling", "default") != "default":
        extra["async_scheduling"] = args.async_scheduling == "on"
    if args.cudagraph_mode != "default":
        extra["compilation_config"] = {"cudagraph_mode": args.cudagraph_mode}
    llm = LLM(
        model=args.model,
        speculative_config=spec_config(args.worker, args.k, args.depth, args.speculator),
        max_model_len=args.max_model_len,
        **memory_kwargs(
            args.model,
            most_running(args) * args.max_model_len,
            args.gpu_memory_utilization,
        ),
        enforce_eager=bool(args.enforce_eager),
        dtype=getattr(args, "dtype", None) or "auto",  # CPU benchmarks: cpu_dtype()
        disable_log_stats=False,
        seed=0,
        **{**extra, **overrides},
    )
    return llm, tok, token_prompts


LOADS = ("steady", "waves")  # how a concurrency level's requests are sent


def generate_at_concurrency(
    llm: Any, prompts: list[Any], params: Any, concurrency: int, load: str = "steady"
) -> list[list[int]]:
    """The output token ids of ``prompts`` (in order), served ``concurrency``
    at a time. ``steady``: a new request joins as soon as one finishes, so
    ``concurrency`` run at once until the prompts run out (as ``vllm bench
    serve --max-concurrency``); ``waves``: ``concurrency`` at a time, each
    wave waiting for its slowest request."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if load == "waves":
        out: list[list[int]] = []
        for i in range(0, len(prompts), concurrency):
            outs = llm.generate(prompts[i : i + concurrency], params, use_tqdm=False)
            out += [list(o.outputs[0].token_ids) for o in outs]
        return out
    if load not in LOADS:
        raise ValueError(f"unknown load {load!r}; known: {', '.join(LOADS)}")
    engine = llm.llm_engine
    ids = [f"steady-{os.getpid()}-{id(prompts)}-{i}" for i in range(len(prompts))]
    index = {rid: i for i, rid in enumerate(ids)}
    done: dict[int, list[int]] = {}
    sent = 0
    while len(done) < len(prompts):
        while sent < len(prompts) and sent - len(done) < concurrency:
            engine.add_request(ids[sent], prompts[sent], params)
            sent += 1
        for o in engine.step():
            if o.finished:
                done[index[o.request_id]] = list(o.outputs[0].token_ids)
    return [done[i] for i in range(len(prompts))]
