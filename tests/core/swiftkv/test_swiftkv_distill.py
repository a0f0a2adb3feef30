"""SwiftKV conversion (Llama -> the released llama_swiftkv layout) and
distillation commands on a tiny 4-layer random Llama (CPU, seconds)."""

from __future__ import annotations

import json
import random

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")
pytest.importorskip("tqdm")

from arctic_inference_core.swiftkv import convert as conv  # noqa: E402
from arctic_inference_core.swiftkv import distill as dist  # noqa: E402


def _tiny_llama(path, layers: int = 4):
    """Byte-level tokenizer + random 4-layer Llama (GQA 2:1, untied head)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from arctic_inference_vllm.testing import save_byte_tokenizer

    vocab_size = save_byte_tokenizer(path)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # sharper distributions: a visible SwiftKV gap
        model.lm_head.weight.mul_(4.0)
    model.save_pretrained(path, safe_serialization=True)
    return path


def _prompts(path, n: int = 60, seed: int = 0):
    rng = random.Random(seed)
    words = [
        "def",
        "return",
        "self",
        "import",
        "class",
        "for",
        "in",
        "if",
        "else",
        "x",
        "y",
        "(",
        ")",
        ":",
    ]
    with path.open("w") as f:
        for i in range(n):
            prompt = " ".join(rng.choice(words) for _ in range(rng.randint(20, 60)))
            rec = {"id": i, "prompt": prompt}
            if i % 2:
                rec["response"] = " ".join(rng.choice(words) for _ in range(10))
            f.write(json.dumps(rec) + "\n")
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("skv")
    llama = _tiny_llama(root / "llama")
    student = root / "student"
    summary = conv.convert(llama, student, num_key_value_layers=2)
    return root, llama, student, summary


def test_convert_saves_reloadable_model(setup) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from arctic_inference_core.swiftkv.hf_llama import LlamaSwiftKVForCausalLM

    root, llama, student, summary = setup
    assert summary["reload_check"] == "ok" and summary["num_key_value_layers"] == 2
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(summary["tokenizer_files"])
    model = AutoModelForCausalLM.from_pretrained(student)
    assert isinstance(model, LlamaSwiftKVForCausalLM)
    assert model.config.num_key_value_layers == 2 and model.config.swiftkv is True
    assert AutoTokenizer.from_pretrained(student)("ab", add_special_tokens=False)["input_ids"]
    # A K = L - 1 conversion is exactly the Llama (checks RoPE buffers stay fp32 etc.).
    exact = root / "exact"
    s = conv.convert(llama, exact, num_key_value_layers=3)
    assert s["max_abs_logit_diff_vs_llama_random_ids"] < 1e-4
    assert s["greedy_agreement_vs_llama_random_ids"] == 1.0


def test_convert_cli_errors(setup, tmp_path, capsys) -> None:
    root, llama, student, _ = setup
    for k in (0, 4, -1):
        assert (
            conv.main(
                [
                    "--llama",
                    str(llama),
                    "--out",
                    str(tmp_path / f"o{k}"),
                    "--num-key-value-layers",
                    str(k),
                ]
            )
            == 2
        )
        assert "must be in [1, num_hidden_layers - 1] = [1, 3]" in capsys.readouterr().err
    assert (
        conv.main(
            [
                "--llama",
                str(tmp_path / "nope"),
                "--out",
                str(tmp_path / "o"),
                "--num-key-value-layers",
                "1",
            ]
        )
        == 2
    )
    assert "not found" in capsys.readouterr().err
    # Non-Llama config: the converted SwiftKV model itself.
    assert (
        conv.main(
            ["--llama", str(student), "--out", str(tmp_path / "o2"), "--num-key-value-layers", "1"]
        )
        == 2
    )
    assert "model_type='llama_swiftkv'" in capsys.readouterr().err
    # Group size larger than the later layers; non-empty --out without --force.
    assert (
        conv.main(
            [
                "--llama",
                str(llama),
                "--out",
                str(tmp_path / "o3"),
                "--num-key-value-layers",
                "2",
                "--group-size",
                "3",
            ]
        )
        == 2
    )
    assert "larger than the number of later layers" in capsys.readouterr().err
    # 3 later layers do not split in groups of 2 in the released layout
    argv = ["--llama", str(llama), "--out", str(tmp_path / "o4"), "--num-key-value-layers", "1"]
    assert conv.main([*argv, "--group-size", "2"]) == 2
    assert "must divide the number of later layers (3)" in capsys.readouterr().err
    assert (
        conv.main(["--llama", str(llama), "--out", str(student), "--num-key-value-layers", "2"])
        == 2
    )
    assert "not empty" in capsys.readouterr().err


def _args(llama, student, prompts, out, **kw):
    argv = [
        "--teacher",
        str(llama),
        "--student",
        str(student),
        "--prompts",
        str(prompts),
        "--out",
        str(out),
        "--seq-len",
        "64",
        "--batch-size",
        "4",
        "--eval-fraction",
        "0.2",
        "--quiet",
        "--check-frozen",
    ]
    for k, v in kw.items():
        flag = "--" + k.replace("_", "-")
        argv += [flag] if v is True else [flag, str(v)]
    return dist.build_parser().parse_args(argv)


def test_distill_improves_and_freezes(setup, tmp_path) -> None:
    from safetensors.torch import load_file

    root, llama, student, _ = setup
    prompts = _prompts(tmp_path / "p.jsonl")
    out = tmp_path / "run"
    summary = dist.distill(
        _args(llama, student, prompts, out, steps=80, lr=1e-2, eval_every=40, max_eval_chunks=8)
    )
    before, after = summary["before"], summary["after"]
    assert before["step"] == 0 and after["step"] == 80
    assert before["kl"] > 0.01  # the converted (undistilled) student differs from the teacher
    assert after["kl"] < 0.7 * before["kl"]
    assert after["greedy_agreement"] >= before["greedy_agreement"]
    assert after["teacher_ce"] == pytest.approx(before["teacher_ce"])
    hist = json.loads((out / "eval.json").read_text())
    assert [h["step"] for h in hist["history"]] == [0, 40, 80]
    assert set(hist["meta"]["trainable"]) == {
        "model.norm_swiftkv.weight",
        *(f"model.layers.{i}.self_attn.{p}_proj_swiftkv.weight" for i in (2, 3) for p in "qkv"),
    }

    # Frozen parameters of the saved final student equal the converted student's.
    s0 = load_file(str(student / "model.safetensors"))
    s1 = load_file(str(out / "final" / "model.safetensors"))
    assert s0.keys() == s1.keys()
    for k in s0:
        if dist.is_swiftkv_param(k):
            assert not torch.equal(s0[k], s1[k]), k
        else:
            assert torch.equal(s0[k], s1[k]), k
    assert (out / "final" / "tokenizer.json").is_file()
    assert (out / "checkpoint" / "trainable.safetensors").is_file()


def test_distill_resume_matches_uninterrupted(setup, tmp_path) -> None:
    root, llama, student, _ = setup
    prompts = _prompts(tmp_path / "p.jsonl", n=30)
    full = dist.distill(_args(llama, student, prompts, tmp_path / "full", steps=6, eval_every=3))
    part = tmp_path / "part"
    stopped = dist.distill(_args(llama, student, prompts, part, steps=6, eval_every=3, stop_at=3))
    assert stopped["stopped_at"] == 3
    resumed = dist.distill(_args(llama, student, prompts, part, steps=6, eval_every=3, resume=True))
    assert resumed["after"]["kl"] == pytest.approx(full["after"]["kl"], rel=1e-4, abs=1e-6)
    steps = [h["step"] for h in json.loads((part / "eval.json").read_text())["history"]]
    assert steps == [0, 3, 6]


def test_distill_errors(setup, tmp_path, capsys) -> None:
    root, llama, student, _ = setup
    prompts = _prompts(tmp_path / "p.jsonl", n=10)
    base = ["--seq-len", "32", "--quiet"]

    def run(teacher, stud, pr, out, *extra):
        return dist.main(
            [
                "--teacher",
                str(teacher),
                "--student",
                str(stud),
                "--prompts",
                str(pr),
                "--out",
                str(out),
                *base,
                *extra,
            ]
        )

    assert run(llama, llama, prompts, tmp_path / "a") == 2  # student not converted
    assert "not a llama_swiftkv checkpoint" in capsys.readouterr().err
    other = tmp_path / "gpt2"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert run(other, student, prompts, tmp_path / "b") == 2  # teacher not a Llama
    assert "not a Llama checkpoint" in capsys.readouterr().err
    assert run(llama, student, tmp_path / "missing.jsonl", tmp_path / "c") == 2
    assert "prompts file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no prompt"}\n')
    assert run(llama, student, bad, tmp_path / "d") == 2
    assert "no string 'prompt' field" in capsys.readouterr().err
    assert run(llama, student, prompts, tmp_path / "e", "--resume") == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert run(llama, student, prompts, tmp_path / "f", "--lr", "0") == 2
    assert "--lr must be > 0" in capsys.readouterr().err
    assert run(llama, tmp_path / "nodir", prompts, tmp_path / "g") == 2
    assert "no config.json" in capsys.readouterr().err


def test_the_student_is_its_own_teacher(setup, tmp_path) -> None:
    """The released layout keeps every Llama weight: the student's directory
    as --base-model is the original Llama (run with swiftkv off)."""
    root, llama, student, _ = setup
    prompts = _prompts(tmp_path / "p.jsonl", n=20)
    by_llama = dist.distill(_args(llama, student, prompts, tmp_path / "a", steps=0))
    by_itself = dist.distill(_args(student, student, prompts, tmp_path / "b", steps=0))
    assert by_itself["before"]["teacher_ce"] == pytest.approx(by_llama["before"]["teacher_ce"])
    assert by_itself["before"]["kl"] == pytest.approx(by_llama["before"]["kl"])
