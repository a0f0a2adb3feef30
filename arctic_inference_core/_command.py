"""The shared skeleton of the core's commands (private).

``python -m arctic_inference_core.speculator.train``,
``python -m arctic_inference_core.swiftkv.convert`` and
``python -m arctic_inference_core.swiftkv.distill`` are built from these
pieces, so they look and behave alike:

- the same module functions: ``build_parser()``, ``parse_args(argv)``,
  ``run(args, log=...) -> dict`` (the work; raises :class:`CommandError` for
  bad input) and ``main(argv) -> int``;
- one flag name per concept (``--base-model``, ``--out``, ``--prompts``,
  ``--steps``, ``--lr``, ``--seed``, ``--device``, ``--dtype``, ``--resume``,
  ``--no-progress``, ...); older spellings stay as argparse aliases;
- one error class, :class:`CommandError`: ``main`` prints ``error: <message>``
  to stderr and returns 2;
- progress lines ``[<command>] ...`` on stderr (evaluations as
  ``[<command>] eval step N: ...``), a tqdm bar unless ``--no-progress``, and
  the result as JSON on stdout;
- ``--resume`` continues from ``<out>/checkpoint`` and is an error when there
  is no checkpoint there.

Importing this module never imports torch (the top-level package re-exports
:class:`CommandError`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from arctic_inference_core._validate import check_int, check_positive

if TYPE_CHECKING:
    import torch

__all__ = [
    "CHECKPOINT_DIR",
    "EVAL_NAME",
    "CommandError",
    "Log",
    "Progress",
    "Reporter",
    "add_base_model",
    "add_force",
    "add_out",
    "add_prompts",
    "add_training_args",
    "apply_threads",
    "check_device",
    "check_flag_int",
    "check_ints",
    "check_training_args",
    "log_stderr",
    "new_parser",
    "progress",
    "resume_checkpoint",
    "run_main",
    "torch_dtype",
]

T = TypeVar("T")

#: A progress-line sink: called with one line of text.
Log = Callable[[str], None]

#: Where the training commands keep what ``--resume`` continues from.
CHECKPOINT_DIR = "checkpoint"
#: The evaluation history the training commands write into ``--out``.
EVAL_NAME = "eval.json"

_DTYPE_SPELLINGS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


class CommandError(ValueError):
    """Bad input or settings of a command (the message says what and where).

    Raised by ``run()`` of :mod:`arctic_inference_core.speculator.train`,
    :mod:`arctic_inference_core.swiftkv.convert` and
    :mod:`arctic_inference_core.swiftkv.distill`; their ``main()`` prints
    ``error: <message>`` and returns exit status 2.
    """


# ----------------------------------------------------------------- output


def log_stderr(line: str) -> None:
    """Print a progress line to stderr (through ``tqdm.write`` when tqdm is
    installed, so that a progress bar stays intact)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        print(line, file=sys.stderr, flush=True)
    else:
        tqdm.write(line, file=sys.stderr)


class Reporter:
    """Writes a command's progress lines, ``[<command>] <message>``, to ``log``
    (``None``: :func:`log_stderr`)."""

    def __init__(self, command: str, log: Log | None = None) -> None:
        self.command = command
        self._log = log_stderr if log is None else log

    def __call__(self, message: str) -> None:
        self._log(f"[{self.command}] {message}")

    def resuming(self, checkpoint: Path | str, step: int) -> None:
        self(f"resuming from {checkpoint} at step {step}")

    def evaluation(self, step: int, metrics: str) -> None:
        self(f"eval step {step}: {metrics}")

    def done(self, outputs: str, step: int | None = None) -> None:
        self(f"done at step {step}; {outputs}" if step is not None else f"done; {outputs}")


class Progress(Generic[T]):
    """An iterable with a tqdm bar (on stderr) when enabled and tqdm is installed."""

    def __init__(self, items: Iterable[T], enabled: bool, **tqdm_kwargs: Any) -> None:
        self._items = items
        self._bar: Any = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                pass
            else:
                self._bar = tqdm(items, dynamic_ncols=True, **tqdm_kwargs)

    def __iter__(self) -> Iterator[T]:
        return iter(self._bar if self._bar is not None else self._items)

    def set_postfix(self, **values: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix(**values)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def progress(items: Iterable[T], args: argparse.Namespace, **tqdm_kwargs: Any) -> Progress[T]:
    """``items`` with a progress bar unless ``--no-progress``."""
    return Progress(items, not getattr(args, "no_progress", False), **tqdm_kwargs)


# ----------------------------------------------------------------- flags


def new_parser(module: str, description: str) -> argparse.ArgumentParser:
    """The parser of ``python -m <module>``."""
    return argparse.ArgumentParser(prog=f"python -m {module}", description=description)


def add_base_model(p: argparse.ArgumentParser, help: str, *aliases: str) -> None:
    """``--base-model DIR`` (required): the Hugging Face model the command starts from."""
    p.add_argument("--base-model", *aliases, dest="base_model", required=True, help=help)


def add_out(p: argparse.ArgumentParser, help: str) -> None:
    """``--out DIR`` (required)."""
    p.add_argument("--out", required=True, help=help)


def add_prompts(p: argparse.ArgumentParser, help: str) -> None:
    """``--prompts FILE.jsonl`` (required; read with :mod:`arctic_inference_core.traces`)."""
    p.add_argument("--prompts", required=True, help=help)


def add_force(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--force", action="store_true", help=help)


def _dtype_name(name: str) -> str:
    return _DTYPE_SPELLINGS.get(name, name)


def add_training_args(
    p: argparse.ArgumentParser,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    warmup_steps: int | None,
    warmup_help: str,
    grad_clip: float,
    eval_every: int,
    eval_every_help: str,
    dtypes: Sequence[str],
    dtype_help: str,
    warmup_aliases: Sequence[str] = (),
    no_progress_aliases: Sequence[str] = (),
) -> None:
    """The flags every training command has, with the command's defaults.

    ``--dtype`` also takes the short spellings fp32, bf16 and fp16.
    """
    p.add_argument("--steps", type=int, default=steps, help="total optimizer steps")
    p.add_argument("--batch-size", type=int, default=batch_size, help="examples per optimizer step")
    p.add_argument("--lr", type=float, default=lr, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, default=weight_decay)
    p.add_argument(
        "--warmup-steps",
        *warmup_aliases,
        dest="warmup_steps",
        type=int,
        default=warmup_steps,
        help=warmup_help,
    )
    p.add_argument("--grad-clip", type=float, default=grad_clip, help="0: no clipping")
    p.add_argument("--eval-every", type=int, default=eval_every, help=eval_every_help)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument(
        "--dtype", type=_dtype_name, choices=tuple(dtypes), default=dtypes[0], help=dtype_help
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (1 avoids OpenMP spin-wait slowdowns on a busy machine)",
    )
    p.add_argument(
        "--resume", action="store_true", help=f"continue from OUT/{CHECKPOINT_DIR} (must exist)"
    )
    p.add_argument(
        "--no-progress",
        *no_progress_aliases,
        dest="no_progress",
        action="store_true",
        help="no progress bar",
    )


# ----------------------------------------------------------------- checks


def check_flag_int(flag: str, value: object, minimum: int) -> int:
    """``value`` of ``flag`` (``"--steps"``) must be an int >= ``minimum``.

    Raises:
        CommandError: it is not (``--steps must be >= 1, got 0``).
    """
    try:
        return check_int(flag, value, minimum)
    except (TypeError, ValueError) as e:
        raise CommandError(str(e)) from None


def check_ints(args: argparse.Namespace, minimums: Mapping[str, int]) -> None:
    """:func:`check_flag_int` of each ``args.<dest>`` (the flag is ``--dest-name``).

    Raises:
        CommandError: the first one that is not.
    """
    for dest, minimum in minimums.items():
        check_flag_int("--" + dest.replace("_", "-"), getattr(args, dest), minimum)


def check_device(device: str) -> None:
    """``cpu`` or ``cuda[:N]``, and CUDA must be available for the latter.

    Raises:
        CommandError: otherwise.
    """
    if not (device == "cpu" or device == "cuda" or device.startswith("cuda:")):
        raise CommandError(f"--device must be cpu or cuda[:N], got {device!r}")
    if device != "cpu":
        import torch

        if not torch.cuda.is_available():
            raise CommandError(f"--device {device}: CUDA is not available")


def check_training_args(
    args: argparse.Namespace, *, min_steps: int = 1, min_eval_every: int = 1
) -> None:
    """The checks of the flags :func:`add_training_args` adds.

    Raises:
        CommandError: the first bad value.
    """
    check_ints(args, {"steps": min_steps, "batch_size": 1, "eval_every": min_eval_every})
    try:
        check_positive("--lr", args.lr)
    except ValueError as e:
        raise CommandError(str(e)) from None
    check_device(args.device)


def torch_dtype(name: str, allowed: Sequence[str]) -> torch.dtype:
    """The torch dtype of a ``--dtype`` value (short spellings accepted).

    Raises:
        CommandError: ``name`` is not one of ``allowed``.
    """
    import torch

    canonical = _DTYPE_SPELLINGS.get(name, name)
    if canonical not in allowed:
        raise CommandError(f"--dtype must be one of {', '.join(allowed)}, got {name!r}")
    dtype = getattr(torch, canonical)
    assert isinstance(dtype, torch.dtype)
    return dtype


def apply_threads(args: argparse.Namespace) -> None:
    """``--threads N``: torch's CPU thread count (at least 1)."""
    if getattr(args, "threads", None) is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))


def resume_checkpoint(args: argparse.Namespace, marker: str) -> Path | None:
    """With ``--resume``, the checkpoint directory to continue from.

    ``marker`` is the file a complete checkpoint holds.

    Raises:
        CommandError: ``--resume`` and no checkpoint in ``OUT/checkpoint``.
    """
    if not args.resume:
        return None
    ckpt = Path(args.out) / CHECKPOINT_DIR
    if not (ckpt / marker).is_file():
        raise CommandError(f"--resume: no checkpoint in {ckpt}")
    return ckpt


# ----------------------------------------------------------------- main


def run_main(
    parse_args: Callable[[Sequence[str] | None], argparse.Namespace],
    run: Callable[[argparse.Namespace], Mapping[str, Any]],
    argv: Sequence[str] | None,
) -> int:
    """Parse, run, print the result as JSON on stdout; a :class:`CommandError`
    becomes ``error: <message>`` on stderr and exit status 2."""
    args = parse_args(argv)
    try:
        result = run(args)
    except CommandError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0
