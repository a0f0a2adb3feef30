"""Configuration of Arctic speculator draft heads (MLP and sum-LSTM).

:class:`SpeculatorConfig` is a plain dataclass (no torch import) that reads and
writes the Hugging Face ``config.json`` shapes used by the published
speculator checkpoints:

* ``MLPSpeculatorPreTrainedModel`` / ``ArcticMLPSpeculatorPreTrainedModel``
  (IBM fms-extras convention): ``emb_dim`` is the *base model hidden size*,
  ``inner_dim`` the speculator width (``0`` means "same as emb_dim").
* ``ArcticLSTMSpeculatorPreTrainedModel`` (and the legacy alias
  ``MLPVariantSpeculatorPreTrainedModel``): ``input_hidden_dim`` is the base
  hidden size; ``inner_dim``/``proj_dim``/``emb_dim`` are strings of
  dot-separated layer widths (``"4096"``, ``"4096.4096"``); ``method`` is
  ``"sum_lstm"`` (LSTM head) or ``"sum_rnn"`` (the default when absent: an MLP
  head with Arctic tensor names).

Internally the fields are normalised: ``input_hidden_dim`` is always the base
hidden size and ``emb_dim`` always the token-embedding width.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from arctic_inference_core._validate import is_int

__all__ = [
    "SpeculatorConfig",
    "MLP_ARCHITECTURES",
    "LSTM_ARCHITECTURES",
    "CONFIG_NAME",
]

CONFIG_NAME = "config.json"

#: architectures whose dims follow the IBM convention (emb_dim = base hidden size)
MLP_ARCHITECTURES = ("MLPSpeculatorPreTrainedModel", "ArcticMLPSpeculatorPreTrainedModel")
#: architectures following the ArcticTraining LSTM-config convention
LSTM_ARCHITECTURES = ("ArcticLSTMSpeculatorPreTrainedModel", "MLPVariantSpeculatorPreTrainedModel")

# method names accepted in config.json -> internal kind
_MLP_METHODS = ("mlp", "sum_rnn")
_LSTM_METHODS = ("sum_lstm",)

# keys that this config understands (everything else is kept in ``extra``)
_KNOWN_KEYS = frozenset(
    {
        "architectures",
        "model_type",
        "method",
        "n_predict",
        "n_candidates",
        "top_k_tokens_per_head",
        "input_hidden_dim",
        "inner_dim",
        "proj_dim",
        "emb_dim",
        "vocab_size",
        "tie_weights",
        "tie_lstm_embs",
        "scale_input",
        "base_model_name_or_path",
    }
)


def _parse_dim(name: str, value: Any) -> int:
    """Parse a width given as int or as a dotted string (``"4096"``).

    Multi-layer widths (``"4096.4096"``) describe stacked projection layers
    in ArcticTraining's experimental ``sum_rnn`` variant; they are rejected
    because only single-layer heads are implemented.
    """
    if is_int(value):
        return int(value)
    if isinstance(value, str):
        parts = [p for p in value.split(".") if p != ""]
        try:
            dims = [int(p) for p in parts]
        except ValueError:
            raise ValueError(
                f"speculator config: {name!r} must be an integer or a dotted string of "
                f"integers, got {value!r}"
            ) from None
        if len(dims) != 1:
            raise ValueError(
                f"speculator config: {name!r}={value!r} describes {len(dims)} stacked layers; "
                "only single-layer speculator heads are supported"
            )
        return dims[0]
    raise ValueError(f"speculator config: {name!r} must be an integer width, got {value!r}")


def _require(d: Mapping[str, Any], key: str, kind: str) -> Any:
    if key not in d or d[key] is None:
        raise ValueError(f"speculator config ({kind}): missing required key {key!r}")
    return d[key]


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"speculator config: {name!r} must be true/false, got {value!r}")


@dataclass
class SpeculatorConfig:
    """Hyper-parameters of an Arctic speculator (normalised).

    Attributes:
        method: ``"mlp"`` (MLP speculator) or ``"sum_lstm"`` (LSTM speculator).
        n_predict: number of draft heads = tokens proposed per step (>= 1).
        input_hidden_dim: hidden size of the base model's last hidden state.
        inner_dim: speculator state width.
        vocab_size: vocabulary size (must match the base model).
        emb_dim: token-embedding width (must equal ``inner_dim``); defaults to it.
        proj_dim: width of one gate's projection (must equal ``inner_dim``);
            defaults to it.
        tie_weights: share head modules across positions (the first input
            projection stays separate because its input width differs).
        tie_lstm_embs: LSTM only: one token embedding for all four gates
            (published checkpoints); otherwise one embedding per gate.
        scale_input: RMS-normalise the base hidden state (and divide by sqrt 2)
            before the first head.
        base_model_name_or_path: informational: the base model trained against.
        architecture: architecture name the config was read from (written back
            only when it is compatible with ``method``).
        extra: unknown config.json keys, preserved on save.
    """

    method: str
    n_predict: int
    input_hidden_dim: int
    inner_dim: int
    vocab_size: int
    emb_dim: int | None = None
    proj_dim: int | None = None
    tie_weights: bool = False
    tie_lstm_embs: bool = True
    scale_input: bool = False
    base_model_name_or_path: str | None = None
    architecture: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.emb_dim is None:
            self.emb_dim = self.inner_dim
        if self.proj_dim is None:
            self.proj_dim = self.inner_dim
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ``ValueError`` if the hyper-parameters are inconsistent."""
        if self.method not in ("mlp", "sum_lstm"):
            raise ValueError(
                f"speculator config: unknown method {self.method!r} (expected 'mlp' or 'sum_lstm')"
            )
        for name in (
            "n_predict",
            "input_hidden_dim",
            "inner_dim",
            "vocab_size",
            "emb_dim",
            "proj_dim",
        ):
            v = getattr(self, name)
            if not is_int(v):
                raise ValueError(f"speculator config: {name!r} must be an int, got {v!r}")
        if self.n_predict < 1:
            raise ValueError(f"speculator config: n_predict must be >= 1, got {self.n_predict}")
        for name in ("input_hidden_dim", "inner_dim", "vocab_size", "emb_dim", "proj_dim"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"speculator config: {name!r} must be positive, got {getattr(self, name)}"
                )
        if self.emb_dim != self.inner_dim:
            raise ValueError(
                f"speculator config: emb_dim ({self.emb_dim}) must equal inner_dim "
                f"({self.inner_dim}): the token embedding is added to the projected state"
            )
        if self.proj_dim != self.inner_dim:
            raise ValueError(
                f"speculator config: proj_dim ({self.proj_dim}) must equal inner_dim "
                f"({self.inner_dim}) for single-layer heads"
            )

    def check_compatible(self, base_hidden_size: int, base_vocab_size: int) -> None:
        """Check that this speculator fits a base model.

        Raises:
            ValueError: if the base model's hidden size differs from
                ``input_hidden_dim`` or its vocabulary size from ``vocab_size``.
        """
        problems = []
        if int(base_hidden_size) != self.input_hidden_dim:
            problems.append(
                f"hidden size mismatch: speculator expects input_hidden_dim="
                f"{self.input_hidden_dim}, base model has hidden_size={base_hidden_size}"
            )
        if int(base_vocab_size) != self.vocab_size:
            problems.append(
                f"vocab size mismatch: speculator has vocab_size={self.vocab_size}, "
                f"base model has vocab_size={base_vocab_size}"
            )
        if problems:
            raise ValueError(
                "speculator is not compatible with the base model: " + "; ".join(problems)
            )

    # --------------------------------------------------------------- dict I/O
    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SpeculatorConfig:
        """Build from a ``config.json`` dict (any of the published layouts).

        Raises:
            ValueError: on a missing key, unknown architecture/method or an
                inconsistent value; the message names the problem.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"speculator config must be a JSON object, got {type(d).__name__}")
        archs = d.get("architectures")
        if archs is None:
            arch = None
        elif isinstance(archs, (list, tuple)) and len(archs) == 1 and isinstance(archs[0], str):
            arch = archs[0]
        else:
            raise ValueError(
                f"speculator config: 'architectures' must be a list with one name, got {archs!r}"
            )
        if arch is not None and arch not in MLP_ARCHITECTURES + LSTM_ARCHITECTURES:
            raise ValueError(
                f"speculator config: unsupported architecture {arch!r} (supported: "
                f"{', '.join(MLP_ARCHITECTURES + LSTM_ARCHITECTURES)})"
            )

        raw_method = d.get("method")
        if raw_method is None:
            # ArcticTraining's LSTM config class defaults to "sum_rnn" (an MLP head)
            raw_method = "sum_rnn" if arch in LSTM_ARCHITECTURES else "mlp"
        if raw_method in _MLP_METHODS:
            method = "mlp"
        elif raw_method in _LSTM_METHODS:
            method = "sum_lstm"
        else:
            raise ValueError(
                f"speculator config: unsupported method {raw_method!r} "
                f"(supported: {', '.join(_MLP_METHODS + _LSTM_METHODS)})"
            )
        kind = f"{arch or 'no architecture'}, method={raw_method}"

        n_predict = _require(d, "n_predict", kind)
        if not is_int(n_predict):
            raise ValueError(f"speculator config: 'n_predict' must be an int, got {n_predict!r}")
        vocab_size = _parse_dim("vocab_size", _require(d, "vocab_size", kind))

        uses_lstm_layout = arch in LSTM_ARCHITECTURES or (arch is None and "input_hidden_dim" in d)
        if uses_lstm_layout:
            input_hidden_dim = _parse_dim("input_hidden_dim", _require(d, "input_hidden_dim", kind))
            inner_dim = _parse_dim("inner_dim", _require(d, "inner_dim", kind))
            emb_dim = _parse_dim("emb_dim", _require(d, "emb_dim", kind))
            proj_dim = _parse_dim("proj_dim", _require(d, "proj_dim", kind))
        else:
            # IBM convention: emb_dim is the base hidden size
            input_hidden_dim = _parse_dim("emb_dim", _require(d, "emb_dim", kind))
            inner_dim = _parse_dim("inner_dim", _require(d, "inner_dim", kind))
            if inner_dim == 0:
                inner_dim = input_hidden_dim
            emb_dim = proj_dim = inner_dim
            if "input_hidden_dim" in d and d["input_hidden_dim"] is not None:
                ihd = _parse_dim("input_hidden_dim", d["input_hidden_dim"])
                if ihd != input_hidden_dim:
                    raise ValueError(
                        f"speculator config: input_hidden_dim ({ihd}) disagrees with emb_dim "
                        f"({input_hidden_dim}), which is the base hidden size for {kind}"
                    )

        bmp = d.get("base_model_name_or_path")
        extra = {k: v for k, v in d.items() if k not in _KNOWN_KEYS}
        return cls(
            method=method,
            n_predict=n_predict,
            input_hidden_dim=input_hidden_dim,
            inner_dim=inner_dim,
            vocab_size=vocab_size,
            emb_dim=emb_dim,
            proj_dim=proj_dim,
            tie_weights=_as_bool("tie_weights", d.get("tie_weights", False)),
            tie_lstm_embs=_as_bool("tie_lstm_embs", d.get("tie_lstm_embs", method == "sum_lstm")),
            scale_input=_as_bool("scale_input", d.get("scale_input", False)),
            base_model_name_or_path=bmp if isinstance(bmp, str) else None,
            architecture=arch,
            extra=extra,
        )

    def to_dict(self) -> dict[str, Any]:
        """Serialise to the published ``config.json`` layout.

        MLP heads are written in the IBM ``MLPSpeculatorPreTrainedModel``
        layout (``emb_dim`` = base hidden size), which vLLM's built-in
        ``mlp_speculator`` loader also reads (``input_hidden_dim`` is added
        for clarity). LSTM heads are written as
        ``ArcticLSTMSpeculatorPreTrainedModel`` with dotted-string widths and
        ``method="sum_lstm"``.
        """
        d: dict[str, Any] = dict(self.extra)
        common = {
            "model_type": "mlp_speculator",
            "n_predict": self.n_predict,
            "n_candidates": self.n_predict,
            "top_k_tokens_per_head": [1] * self.n_predict,
            "vocab_size": self.vocab_size,
            "tie_weights": self.tie_weights,
            "scale_input": self.scale_input,
            "base_model_name_or_path": self.base_model_name_or_path,
        }
        if self.method == "mlp":
            arch = (
                self.architecture
                if self.architecture in MLP_ARCHITECTURES
                else MLP_ARCHITECTURES[0]
            )
            d.update(common)
            d.update(
                {
                    "architectures": [arch],
                    "emb_dim": self.input_hidden_dim,
                    "inner_dim": self.inner_dim,
                    "input_hidden_dim": self.input_hidden_dim,
                }
            )
        else:
            d.update(common)
            d.update(
                {
                    "architectures": [LSTM_ARCHITECTURES[0]],
                    "method": "sum_lstm",
                    "input_hidden_dim": self.input_hidden_dim,
                    "inner_dim": str(self.inner_dim),
                    "proj_dim": str(self.proj_dim),
                    "emb_dim": str(self.emb_dim),
                    "tie_lstm_embs": self.tie_lstm_embs,
                }
            )
        return d

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str]) -> SpeculatorConfig:
        """Read ``config.json`` from a checkpoint directory (or the file itself).

        Raises:
            ValueError: if the file is missing, is not valid JSON, or is not a
                valid speculator config.
        """
        p = os.fspath(path)
        cfg_path = os.path.join(p, CONFIG_NAME) if os.path.isdir(p) else p
        if not os.path.isfile(cfg_path):
            raise ValueError(f"speculator checkpoint: no {CONFIG_NAME} at {cfg_path!r}")
        try:
            with open(cfg_path, encoding="utf-8") as f:
                d = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"speculator checkpoint: {cfg_path!r} is not valid JSON: {e}"
            ) from None
        return cls.from_dict(d)

    def save_pretrained(self, path: str | os.PathLike[str]) -> None:
        """Write ``config.json`` into directory ``path`` (created if needed)."""
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, CONFIG_NAME), "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")
