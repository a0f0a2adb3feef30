"""The simulator's report: Markdown tables of the replays, the costs, the
memory and the batch micro-benchmark, the project's targets checked on the
main configuration, and the published reference numbers they are read
against."""

from __future__ import annotations

import hashlib
import importlib.metadata
import subprocess
from collections.abc import Sequence
from typing import Any

from benchlib.paths import REPO
from benchlib.suffix.data import FAMILIES
from benchlib.suffix.drafters import ARCTIC_PEER_PREFIX
from benchlib.tables import fmt, table

# Published mean tokens/step on the agentic traces, measured the same way.
REFERENCE: dict[str, dict[str, float]] = {
    "arctic-inference suffix, depth 64 (published)": {
        "edit_file": 17.63,
        "edit_diff": 3.13,
        "new_file": 1.58,
        "all": 9.14,
    },
    "vLLM ngram n=2..5 (published)": {
        "edit_file": 18.01,
        "edit_diff": 2.30,
        "new_file": 1.23,
        "all": 7.73,
    },
}

# Targets for our implementation.
TARGET_MEAN_TOKENS_PER_STEP = 11.0
TARGET_SPECULATE_P50_US = 2.0
TARGET_UPDATE_US_PER_TOKEN = 0.5
TARGET_BYTES_PER_TOKEN = 100.0
TARGET_BATCH256_MS_PER_STEP = 1.0

_NAN = float("nan")


def tokens_table(
    replays: Sequence[dict[str, Any]], published: dict[str, dict[str, float]]
) -> list[str]:
    rows = []
    for r in replays:
        fams = r["families"]
        cells = [fmt(fams[f]["tokens_per_step"]) if f in fams else "n/a" for f in FAMILIES]
        rows.append([r["name"], *cells, fmt(r["all"]["tokens_per_step"])])
    for name, ref in published.items():
        rows.append([name, *(fmt(ref[f]) for f in FAMILIES), fmt(ref["all"])])
    return table(["method", *FAMILIES, "all"], rows)


def acceptance_table(replays: Sequence[dict[str, Any]]) -> list[str]:
    rows = []
    for r in replays:
        a = r["all"]
        steps = max(1, a["steps"])
        zero = r["accepted_len_hist"].get("0", 0) / steps
        rows.append(
            [
                r["name"],
                a["steps"],
                fmt(a["drafted"] / steps),
                fmt(a["accepted"] / steps),
                fmt(a["acceptance_rate"]),
                f"{fmt(100 * zero, 1)}%",
            ]
        )
    header = [
        "method",
        "steps",
        "mean draft len",
        "mean accepted",
        "acceptance rate",
        "steps with 0 accepted",
    ]
    return table(header, rows)


def cost_table(replays: Sequence[dict[str, Any]]) -> list[str]:
    header = [
        "method",
        "speculate calls",
        "p50 us",
        "p90 us",
        "p99 us",
        "mean us",
        "update us/token",
        "stop_request us/response token",
        "start_request us/prompt token",
        "bytes/cached token (end)",
    ]
    rows = []
    for r in replays:
        s = r["speculate_us"]
        rows.append(
            [
                r["name"],
                r["speculate_calls"],
                fmt(s["p50"]),
                fmt(s["p90"]),
                fmt(s["p99"]),
                fmt(s["mean"]),
                fmt(r.get("update_us_per_token", _NAN), 3),
                fmt(r.get("stop_us_per_response_token", _NAN), 3),
                fmt(r.get("start_us_per_prompt_token", _NAN), 3),
                fmt(r.get("final_bytes_per_token", _NAN), 1),
            ]
        )
    return table(header, rows)


def memory_table(replay: dict[str, Any]) -> list[str]:
    rows = [
        [
            s["requests_done"],
            s["cached_tokens"],
            fmt(s["memory_bytes"] / 2**20),
            fmt(s["bytes_per_token"], 1),
        ]
        for s in replay["memory_snapshots"]
    ]
    return table(["requests done", "cached tokens", "memory MiB", "bytes/token"], rows, "rrrr")


def memory_replays(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The main configuration and the reference, which track memory."""
    main, *rest = report["replays"]
    return [main] + [r for r in rest if r["name"].startswith(ARCTIC_PEER_PREFIX)]


def memory_section(replay: dict[str, Any]) -> list[str]:
    lines = ["", f"### Memory during the run ({replay['name']}, max_cached_requests=-1)", ""]
    if replay["name"].startswith(ARCTIC_PEER_PREFIX):
        lines += [
            "Its own `estimate_memory()`, which counts each slot of its stored token "
            "sequences' capacity as `sizeof(std::vector<int32_t>)` (24 bytes on x86-64) rather "
            "than 4 bytes: it overstates by 20 bytes per slot, 20 to 40 bytes per cached token.",
            "",
        ]
    return lines + memory_table(replay)


def batch_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    header = [
        "advance",
        "B",
        "threads",
        "new tokens/req",
        "speculate_batch p50 ms/step",
        "p99 ms/step",
        "p50 us/req",
        "p99 us/req",
        "loop p50 ms/step",
        "loop p99 ms/step",
        "loop p50 us/req",
        "speedup (p50)",
        "mean draft len",
        "idle req-steps",
        "drafts identical",
        "bulk add us/token",
    ]
    cells = []
    for r in rows:
        b, loop = r["speculate_batch"], r["loop"]
        speedup = loop["p50_ms_per_step"] / b["p50_ms_per_step"] if b["p50_ms_per_step"] else _NAN
        cells.append(
            [
                r["advance"],
                r["batch_size"],
                r.get("threads", 1),
                fmt(r["mean_new_tokens"]),
                fmt(b["p50_ms_per_step"], 3),
                fmt(b["p99_ms_per_step"], 3),
                fmt(b["p50_us_per_request"]),
                fmt(b["p99_us_per_request"]),
                fmt(loop["p50_ms_per_step"], 3),
                fmt(loop["p99_ms_per_step"], 3),
                fmt(loop["p50_us_per_request"]),
                f"{fmt(speedup, 1)}x",
                fmt(r["mean_draft_len"]),
                f"{fmt(100 * r['idle_request_step_fraction'], 0)}%",
                "yes" if r["drafts_identical"] else "NO",
                fmt(r["bulk_add_us_per_token"], 3),
            ]
        )
    return table(header, cells, "lrrrrrrrrrrrrrcr")


def target_checks(report: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """(target, met, measured) for each project target, on the main configuration."""
    main = report["replays"][0]
    total_update = main["update_us_per_token"] + main.get("stop_us_per_response_token", 0.0)
    ref = next(iter(REFERENCE.values()))
    checks = [
        (
            f"overall tokens/step >= {TARGET_MEAN_TOKENS_PER_STEP}",
            main["all"]["tokens_per_step"] >= TARGET_MEAN_TOKENS_PER_STEP,
            fmt(main["all"]["tokens_per_step"]),
        )
    ]
    for f in FAMILIES:
        if f in main["families"] and report["reference"]:
            v = main["families"][f]["tokens_per_step"]
            checks.append((f"{f} tokens/step >= arctic reference {ref[f]}", v >= ref[f], fmt(v)))
    checks += [
        (
            f"speculate p50 <= {TARGET_SPECULATE_P50_US} us",
            main["speculate_us"]["p50"] <= TARGET_SPECULATE_P50_US,
            fmt(main["speculate_us"]["p50"]),
        ),
        (
            # Appending to the request (add_active_response) plus moving the
            # response into the global tree (stop_request), per response token.
            f"update (add + stop) <= {TARGET_UPDATE_US_PER_TOKEN} us/token",
            total_update <= TARGET_UPDATE_US_PER_TOKEN,
            fmt(total_update, 3),
        ),
        (
            f"<= {TARGET_BYTES_PER_TOKEN:.0f} bytes/cached token",
            main["final_bytes_per_token"] <= TARGET_BYTES_PER_TOKEN,
            fmt(main["final_bytes_per_token"], 1),
        ),
    ]
    for r in report["batch"]:
        if r["batch_size"] == 256:
            p50 = r["speculate_batch"]["p50_ms_per_step"]
            checks.append(
                (
                    f"batch 256 <= {TARGET_BATCH256_MS_PER_STEP} ms/step "
                    f"(p50, advance {r['advance']}, {r.get('threads', 1)} thread(s))",
                    p50 <= TARGET_BATCH256_MS_PER_STEP,
                    fmt(p50, 3),
                )
            )
    return checks


def head_to_head_table(h2h: dict[str, Any]) -> list[str]:
    header = [
        "family",
        "requests",
        "ours fewer steps",
        "equal",
        "ours more steps",
        "steps won",
        "steps lost",
        "worst requests (ours/peer steps)",
    ]
    rows = []
    for family, r in h2h["families"].items():
        worst = ", ".join(f"{w['id']} ({w['ours_steps']}/{w['peer_steps']})" for w in r["worst"])
        rows.append(
            [
                family,
                r["requests"],
                r["ours_fewer_steps"],
                r["equal"],
                r["ours_more_steps"],
                r["steps_won_where_better"],
                r["steps_lost_where_worse"],
                worst,
            ]
        )
    return [
        f"Per request, {h2h['ours']} vs. {h2h['peer']} (steps to finish the response):",
        "",
        *table(header, rows, "lrrrrrrl"),
    ]


def reference_line(ref: dict[str, Any] | None) -> str:
    if ref is None:
        return "not run (--no-arctic, or arctic-inference could not be imported; see --arctic-path)"
    return f"arctic-inference {ref['version']}, native module `{ref['module_file']}`"


def render_markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    out = [
        "# Suffix decoding simulation",
        "",
        f"Traces: `{meta['traces']}` ({meta['num_traces']} requests; "
        + ", ".join(f"{f}: {n}" for f, n in meta["family_counts"].items())
        + f"), tokenizer `{meta['tokenizer']}`, k={meta['k']}, context={meta['context_len']} tokens, "
        f"max_spec_factor={meta['spec_params']['factor']:g}, max_spec_offset={meta['spec_params']['offset']:g}, "
        f"min_token_prob={meta['spec_params']['min_prob']:g} (batch section: 1, 0, 0.1).",
        f"Command: `{meta['command']}`; total {meta['total_seconds']:.1f} s on {meta['machine']}; "
        f"library at commit {meta['library_commit']}.",
        f"Reference peer: {reference_line(meta['arctic_reference'])}.",
        "",
        "## Mean tokens per step",
        "",
        *tokens_table(report["replays"], report["reference"]),
        "",
        *acceptance_table(report["replays"]),
        "",
        *(line for h2h in report["head_to_head"] for line in head_to_head_table(h2h) + [""]),
        "## Costs (single stream, Python API)",
        "",
        *cost_table(report["replays"]),
        *(line for r in memory_replays(report) for line in memory_section(r)),
    ]
    if report["batch"]:
        out += [
            "",
            f"## Batch entry point (depth {meta['depth']}, k={meta['k']})",
            "",
            "`speculate_batch(ids, new_token_ids=[accepted + 1 true tokens per request])` vs. the loop "
            "`add_active_response` + `speculate(ctx=None)` per request; cache warmed with the other "
            "traces' responses. Idle req-steps: requests whose response had ended (nothing appended, "
            "still drafted). Bulk add: `add_active_response` of whole responses while warming (per-token cost without "
            "per-call overhead).",
            "",
            *batch_table(report["batch"]),
        ]
    checks = [(t, m, "yes" if ok else "**no**") for t, ok, m in target_checks(report)]
    out += ["", "## Targets", "", *table(["target", "measured", "met"], checks, "lrc")]
    return "\n".join(out) + "\n"


def native_module_digest() -> str:
    """sha256 (12 hex digits) of the core's compiled extension, found among
    the installed distribution's files; ``unknown`` if it is not there."""
    try:
        files = importlib.metadata.files("arctic-inference-core") or []
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
    for f in files:
        if f.name.startswith("_C.") and f.suffix in (".so", ".pyd"):
            path = f.locate()
            if path.is_file():
                return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return "unknown"


def library_version() -> str:
    """Git commit of the checkout (with a dirty flag) and a hash of the native
    module, as the library is under development."""

    def git(*cmd: str) -> str:
        return subprocess.run(
            ["git", *cmd], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git(
        "status", "--porcelain", "--untracked-files=no", "--", "cpp", "arctic_inference_core"
    )
    return (
        commit
        + (" + uncommitted changes" if dirty else "")
        + f", _C sha256 {native_module_digest()}"
    )
