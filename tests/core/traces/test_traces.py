"""arctic_inference_core.traces: the one JSONL trace reader."""

from __future__ import annotations

import json

import pytest

from arctic_inference_core.traces import read_prompt_records


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_records_carry_id_family_prompt_response(tmp_path):
    p = _write(
        tmp_path / "t.jsonl",
        [
            {"id": "a", "family": "edit_diff", "prompt": "p0", "response": "r0"},
            "",
            {"prompt": "p1"},
            {"id": 7, "family": 3, "prompt": "p2", "response": 5},
        ],
    )
    assert read_prompt_records(p) == [
        {"id": "a", "family": "edit_diff", "prompt": "p0", "response": "r0"},
        {"id": "3", "family": None, "prompt": "p1", "response": None},
        {"id": "7", "family": None, "prompt": "p2", "response": None},
    ]


def test_limit_and_max_bytes(tmp_path):
    p = _write(tmp_path / "t.jsonl", [{"prompt": "x" * 10, "response": "y" * 5}] * 5)
    assert len(read_prompt_records(p, limit=2)) == 2
    assert len(read_prompt_records(str(p), max_bytes=30)) == 2  # 15 bytes a record
    assert len(read_prompt_records(p, max_bytes=31)) == 3


def test_errors_name_file_and_line(tmp_path):
    with pytest.raises(ValueError, match="prompts file not found"):
        read_prompt_records(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: invalid JSON"):
        read_prompt_records(_write(tmp_path / "bad.jsonl", [{"prompt": "ok"}, "{oops"]))
    with pytest.raises(ValueError, match=r"np.jsonl:1: record has no string 'prompt' field"):
        read_prompt_records(_write(tmp_path / "np.jsonl", [{"text": "x"}]))
    with pytest.raises(ValueError, match=r"nr.jsonl:1: needs a string 'response' field"):
        read_prompt_records(_write(tmp_path / "nr.jsonl", [{"prompt": "x"}]), need_response=True)
    with pytest.raises(ValueError, match="holds no prompts"):
        read_prompt_records(_write(tmp_path / "empty.jsonl", [""]))
