"""benchlib: the worker protocol, tables, version stamps, shapes, the
synthetic traces and the vLLM engine helpers (no engine started)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from benchlib import engine, paths, shapes, stamps, synthetic, tables, worker


def test_paths_point_into_the_checkout() -> None:
    assert (paths.BENCH / "benchlib" / "paths.py").is_file()
    assert paths.RESULTS == paths.REPO / "bench" / "results"
    assert paths.AGENTIC_TRACES == paths.SHARED / "bench-data" / "agentic-requests.jsonl"
    assert paths.shared_traces() in (None, paths.AGENTIC_TRACES)


def test_worker_results_round_trip(capsys: pytest.CaptureFixture[str]) -> None:
    worker.emit_result({"method": "suffix", "tokens_per_s": 1.5})
    out = capsys.readouterr().out
    assert out.startswith("RESULT ")
    assert worker.parse_results("log line\n" + out + "RESULTS are not results\n") == [
        {"method": "suffix", "tokens_per_s": 1.5}
    ]


def _child(tmp_path: Path, code: str) -> list[str]:
    script = tmp_path / "child.py"
    script.write_text(
        f"import sys\nsys.path.insert(0, {str(paths.BENCH)!r})\n"
        "from benchlib.worker import emit_result\n" + code
    )
    return [sys.executable, str(script)]


def test_run_worker_process_collects_and_checks(tmp_path: Path) -> None:
    cmd = _child(tmp_path, "emit_result({'i': 1})\nprint('noise')\nemit_result({'i': 2})\n")
    log = tmp_path / "child.log"
    assert worker.run_worker_process("child", cmd, log, {}, 2) == [{"i": 1}, {"i": 2}]
    with pytest.raises(SystemExit, match=r"child run failed \(exit 0\); see .*child.log"):
        worker.run_worker_process("child", cmd, log, {}, 3)
    bad = _child(tmp_path, "emit_result({'i': 1})\nsys.stderr.write('boom')\nsys.exit(3)\n")
    with pytest.raises(SystemExit, match=r"exit 3"):
        worker.run_worker_process("child", bad, log, {}, 1)
    assert log.read_text() == "boom"


def test_tables() -> None:
    assert tables.table(["a", "b", "c"], [[1, "x", 2.5]], "lrc") == [
        "| a | b | c |",
        "|---|---:|:---:|",
        "| 1 | x | 2.5 |",
    ]
    assert tables.table(["m", "v"], [])[1] == "|---|---:|"
    with pytest.raises(ValueError, match="2 columns"):
        tables.table(["m", "v"], [], "l")
    assert tables.fmt(1.234) == "1.23" and tables.fmt(float("nan")) == "n/a"
    assert tables.fmt(1.25, 1) == "1.2"
    assert tables.ratio(3.0, 2.0) == "1.50x" and tables.ratio(1.0, 0.0) == "n/a"
    assert tables.median([3, 1, 2]) == 2 and math.isnan(tables.median([]))


def test_version_stamp_and_results_files(tmp_path: Path) -> None:
    stamp = stamps.version_stamp()
    assert {"date", "hardware", "python", "torch", "vllm", "arctic_inference_core"} <= set(stamp)
    assert stamp["hardware"]["cpus"] and isinstance(stamp["hardware"]["gpus"], list)
    line = stamps.stamp_line(stamp)
    assert line.startswith(f"Versions: {stamp['date']}; ")
    assert f"Python {stamp['python']}" in line and "arctic_inference_core" in line
    md, js = stamps.write_results(tmp_path, "x", "# T\n\n| a |\n", {"rows": [1]}, stamp, 1)
    assert md.read_text() == "# T\n\n| a |\n\n" + line + "\n"
    assert json.loads(js.read_text()) == {"rows": [1], "versions": stamp}


def test_llama_8b_shape() -> None:
    cfg = shapes.llama_config("llama-8b")
    assert (cfg["model_type"], cfg["num_hidden_layers"], cfg["num_key_value_heads"]) == (
        "llama",
        32,
        8,
    )
    skv = shapes.swiftkv_config("llama-8b", 16)
    assert skv["architectures"] == ["LlamaSwiftKVForCausalLM"] and skv["hidden_size"] == 4096
    llama, swift = shapes.flops_per_prompt_token(cfg, 16, 2048)
    assert 0.5 < swift / llama < 0.55  # K = L/2 at 2048 tokens


def test_synthetic_traces_are_deterministic(tmp_path: Path) -> None:
    rows = synthetic.generate(8, seed=0)
    assert len(rows) == 8 and rows == synthetic.generate(8, seed=0)
    assert {r["family"] for r in rows} <= set(synthetic.FAMILIES)
    assert all(set(r) == {"id", "family", "prompt", "response"} for r in rows)
    path = synthetic.synthetic_trace_file(tmp_path, 8)
    assert path.name == "synthetic-requests-n8-s0.jsonl"
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows


def test_make_traces_command(load_script, tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    assert load_script("make_traces").main(["--out", str(out), "--n", "6", "--seed", "1"]) == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == synthetic.generate(6, 1)


def test_spec_configs() -> None:
    assert engine.spec_config("none", 32, 64) is None
    assert engine.spec_config("ngram", 8, 64)["prompt_lookup_max"] == 5
    assert engine.spec_config("suffix", 32, 24) == {
        "method": "suffix",
        "num_speculative_tokens": 32,
        "suffix_decoding_max_tree_depth": 24,
    }
    with pytest.raises(ValueError, match="needs a speculator"):
        engine.spec_config("arctic", 32, 64)
    assert engine.worker_env("arctic+suffix")[engine.EXTRAS_ENV] == "1"


def test_load_prompts_takes_edit_prompts_from_the_end(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    fams = ["edit_file", "new_file", "edit_diff", "edit_file"]
    path.write_text(
        "".join(
            json.dumps({"id": i, "family": f, "prompt": f"p{i}"}) + "\n" for i, f in enumerate(fams)
        )
        + "\n"  # a blank line is skipped by the core's reader
    )
    assert engine.load_prompts(str(path), 2) == (["p3", "p2"], str(path))


@pytest.mark.skipif(paths.shared_traces() is not None, reason="../shared traces are present")
def test_load_prompts_falls_back_to_synthetic_prompts() -> None:
    prompts, where = engine.load_prompts(None, 3)
    assert where == "synthetic stdlib traces" and len(prompts) == 3
