"""The shared skeleton of the core's commands (speculator.train, swiftkv.convert,
swiftkv.distill): function and flag names, the error class, progress lines,
--resume. Fast: no model is loaded."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

import arctic_inference_core  # noqa: E402
from arctic_inference_core import CommandError  # noqa: E402
from arctic_inference_core._command import Reporter, check_device, torch_dtype  # noqa: E402
from arctic_inference_core.speculator import train  # noqa: E402
from arctic_inference_core.swiftkv import convert, distill  # noqa: E402

COMMANDS = [train, convert, distill]
TRAINING = [train, distill]
SHARED_TRAINING_FLAGS = [
    "--steps",
    "--batch-size",
    "--lr",
    "--weight-decay",
    "--warmup-steps",
    "--grad-clip",
    "--eval-every",
    "--seed",
    "--device",
    "--dtype",
    "--threads",
    "--resume",
    "--no-progress",
]


def _flags(mod) -> set[str]:
    return {s for a in mod.build_parser()._actions for s in a.option_strings}


@pytest.mark.parametrize("mod", COMMANDS, ids=lambda m: m.__name__)
def test_same_functions_and_error_class(mod) -> None:
    for name in ("build_parser", "parse_args", "run", "main"):
        assert callable(getattr(mod, name)), name
        assert name in mod.__all__
    assert mod.build_parser().prog == f"python -m {mod.__name__}"
    assert {"--base-model", "--out"} <= _flags(mod)


def test_one_error_class() -> None:
    assert train.TrainingError is distill.DistillError is convert.ConversionError is CommandError
    assert arctic_inference_core.CommandError is CommandError
    assert issubclass(CommandError, ValueError)


@pytest.mark.parametrize("mod", TRAINING, ids=lambda m: m.__name__)
def test_training_commands_share_flags(mod) -> None:
    assert set(SHARED_TRAINING_FLAGS) | {"--prompts"} <= _flags(mod)


def test_old_flag_spellings_still_parse() -> None:
    a = distill.parse_args(
        ["--teacher", "T", "--student", "S", "--prompts", "p", "--out", "o"]
        + ["--quiet", "--warmup", "7", "--dtype", "bf16"]
    )
    assert (a.base_model, a.no_progress, a.warmup_steps, a.dtype) == ("T", True, 7, "bfloat16")
    b = convert.parse_args(["--llama", "L", "--out", "o", "--num-key-value-layers", "2"])
    assert b.base_model == "L"
    c = train.parse_args(["--base-model", "B", "--prompts", "p", "--out", "o", "--dtype", "fp32"])
    assert c.dtype == "float32" and c.no_progress is False and c.threads is None


def test_dtype_choices_stay_per_command() -> None:
    with pytest.raises(SystemExit):  # train has no float16 (autocast is bf16 only)
        train.parse_args(["--base-model", "B", "--prompts", "p", "--out", "o", "--dtype", "fp16"])
    with pytest.raises(CommandError, match="--dtype must be one of float32, bfloat16"):
        torch_dtype("float16", ("float32", "bfloat16"))


def test_device_check() -> None:
    check_device("cpu")
    with pytest.raises(CommandError, match=r"--device must be cpu or cuda\[:N\], got 'tpu'"):
        check_device("tpu")


def test_progress_lines() -> None:
    lines: list[str] = []
    say = Reporter("distill", lines.append)
    say("3 train chunks")
    say.resuming("out/checkpoint", 40)
    say.evaluation(40, "kl 0.1")
    say.done("student in out/final", 80)
    assert lines == [
        "[distill] 3 train chunks",
        "[distill] resuming from out/checkpoint at step 40",
        "[distill] eval step 40: kl 0.1",
        "[distill] done at step 80; student in out/final",
    ]


def test_resume_without_checkpoint_is_an_error(tmp_path, capsys) -> None:
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "llama"}))
    argv = ["--base-model", str(base), "--prompts", str(tmp_path / "p.jsonl")]
    argv += ["--out", str(tmp_path / "out"), "--resume"]
    with pytest.raises(CommandError, match="--resume: no checkpoint in"):
        train.run(train.parse_args(argv), log=lambda line: None)
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --resume: no checkpoint in")


@pytest.mark.parametrize(
    "mod, argv, message",
    [
        (train, ["--steps", "0"], "--steps must be >= 1, got 0"),
        (train, ["--lr", "0"], "--lr must be > 0, got 0.0"),
        (distill, ["--student", "S", "--steps", "-1"], "--steps must be >= 0, got -1"),
        (distill, ["--student", "S", "--seq-len", "1"], "--seq-len must be >= 2, got 1"),
        (distill, ["--student", "S", "--device", "tpu"], "--device must be cpu or cuda"),
    ],
)
def test_bad_flags_exit_2(mod, argv, message, tmp_path, capsys) -> None:
    common = ["--base-model", str(tmp_path), "--prompts", "p", "--out", str(tmp_path / "o")]
    assert mod.main(common + argv) == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")


def test_convert_error_names_the_flag(tmp_path, capsys) -> None:
    argv = ["--base-model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]
    assert convert.main(argv + ["--num-key-value-layers", "1"]) == 2
    assert capsys.readouterr().err.startswith("error: Llama checkpoint directory not found")
