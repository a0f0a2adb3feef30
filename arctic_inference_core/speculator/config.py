"""Configuration of Arctic speculator draft heads (MLP and sum-LSTM).

:class:`SpeculatorConfig` is a plain dataclass (no torch import) that reads and
writes the Hugging Face ``config.json`` shapes of the released speculator
checkpoints (the layouts Snowflake's Arctic Inference 0.3.0 loads, which read
``config.json`` through vLLM's ``MLPSpeculatorConfig``):

* ``MLPSpeculatorPreTrainedModel`` / ``ArcticMLPSpeculatorPreTrainedModel``
  (IBM fms-extras convention): ``emb_dim`` is the *base model hidden size*,
  ``inner_dim`` the speculator width (``0`` means "same as emb_dim").
* ``ArcticLSTMSpeculatorPreTrainedModel`` (and its alias
  ``MLPVariantSpeculatorPreTrainedModel``), written by ArcticTraining:
  ``input_hidden_dim`` is the base hidden size; ``inner_dim``/``proj_dim``/
  ``emb_dim`` are widths given as an int, a string (``"4096"``), a dotted
  string (``"4096.4096"``) or a list; ``method`` is ``"sum_lstm"`` (LSTM
  head) or ``"sum_rnn"`` (the default when absent: an MLP head with
  ``nn.Sequential`` tensor names, whose dotted widths stack layers).

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
    "ARCTIC_ARCHITECTURES",
    "CONFIG_NAME",
]

CONFIG_NAME = "config.json"

#: architectures whose dims follow the IBM convention (emb_dim = base hidden size)
MLP_ARCHITECTURES = ("MLPSpeculatorPreTrainedModel", "ArcticMLPSpeculatorPreTrainedModel")
#: architectures following the ArcticTraining LSTM-config convention
LSTM_ARCHITECTURES = ("ArcticLSTMSpeculatorPreTrainedModel", "MLPVariantSpeculatorPreTrainedModel")
#: the architectures Arctic Inference's ``arctic`` method accepts (the IBM
#: ``MLPSpeculatorPreTrainedModel`` is vLLM's own ``mlp_speculator``)
ARCTIC_ARCHITECTURES = (
    "ArcticMLPSpeculatorPreTrainedModel",
    "ArcticLSTMSpeculatorPreTrainedModel",
    "MLPVariantSpeculatorPreTrainedModel",
)

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
        "base_model_archs",
    }
)


def _width(name: str, value: Any) -> int:
    if is_int(value):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise ValueError(
        f"speculator config: {name!r} must be an integer or a dotted string of integers, "
        f"got {value!r}"
    )


def _parse_dims(name: str, value: Any) -> list[int]:
    """Widths given as an int, a string (``"4096"``), a dotted string
    (``"4096.4096"``, one width per stacked layer) or a list of ints (what
    Arctic Inference's ``_parse_dim`` accepts)."""
    if isinstance(value, str):
        parts: list[Any] = value.split(".")
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [value]
    if not parts:
        raise ValueError(f"speculator config: {name!r} is an empty list of widths")
    return [_width(name, p) for p in parts]


def _parse_dim(name: str, value: Any) -> int:
    """One width (int or ``"4096"``); a dotted or list value is refused."""
    dims = _parse_dims(name, value)
    if len(dims) != 1:
        raise ValueError(
            f"speculator config: {name!r}={value!r} lists {len(dims)} widths; "
            "this key takes one width"
        )
    return dims[0]


def _require(d: Mapping[str, Any], key: str, kind: str) -> Any:
    if key not in d or d[key] is None:
        raise ValueError(f"speculator config ({kind}): missing required key {key!r}")
    return d[key]


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"speculator config: {name!r} must be true/false, got {value!r}")


def _parse_archs(value: Any) -> tuple[str, ...] | None:
    """``base_model_archs``: a list of architecture names (a single string is
    taken as a list of one)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(a, str) and a for a in value):
        return tuple(value)
    raise ValueError(
        f"speculator config: 'base_model_archs' must be a list of architecture names, got {value!r}"
    )


def _dotted(dims: tuple[int, ...]) -> str:
    return ".".join(str(d) for d in dims)


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
            when it fits the head; see :attr:`layout`).
        extra: unknown config.json keys, preserved on save.
        emb_dims: MLP heads in the ``sum_rnn`` layout only: the widths of a
            stacked token-embedding (``emb_dim: "p.p"``); every width equals
            ``emb_dim`` (each layer's norm is as wide as its input). ``None``:
            one layer.
        proj_dims: the same for the input projection (``proj_dim: "p.p"``).
        inner_dims: the same after the mix (``inner_dim: "p.q.r"``): a norm of
            width ``p``, then per further width a GELU, a linear layer and a
            norm; ``inner_dims[0]`` equals ``inner_dim`` and the last width is
            what the LM heads and the next projection read
            (:attr:`out_dim`).
        base_model_archs: the base models' architectures the speculator was
            trained for (``config.json`` key ``base_model_archs``; checked
            against the served model by the vLLM adapter). ``None``: unknown.
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
    emb_dims: tuple[int, ...] | None = None
    proj_dims: tuple[int, ...] | None = None
    inner_dims: tuple[int, ...] | None = None
    base_model_archs: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.emb_dim is None:
            self.emb_dim = self.inner_dim
        if self.proj_dim is None:
            self.proj_dim = self.inner_dim
        for name in ("emb_dims", "proj_dims", "inner_dims", "base_model_archs"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))
        self.validate()

    # ------------------------------------------------------------ derived
    @property
    def stacked(self) -> bool:
        """Whether the head has stacked layers (``sum_rnn`` dotted widths)."""
        return any(
            d is not None and len(d) > 1 for d in (self.emb_dims, self.proj_dims, self.inner_dims)
        )

    @property
    def out_dim(self) -> int:
        """Width of the state the LM heads read (``inner_dims[-1]``)."""
        return self.inner_dims[-1] if self.inner_dims else self.inner_dim

    @property
    def layout(self) -> str:
        """The checkpoint layout :meth:`to_dict` and ``save_speculator`` write:
        ``"mlp"`` (IBM names ``emb.{i}.weight``, ``ArcticMLPSpeculator``
        architecture), ``"sum_rnn"`` (an MLP head read from an
        ``ArcticLSTM``-architecture config, or a stacked one: ``nn.Sequential``
        names ``emb.{i}.0.weight``) or ``"sum_lstm"``."""
        if self.method == "sum_lstm":
            return "sum_lstm"
        if self.stacked or self.architecture in LSTM_ARCHITECTURES:
            return "sum_rnn"
        return "mlp"

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
                f"({self.inner_dim}): the projection is added to the token embedding"
            )
        for name in ("emb_dims", "proj_dims", "inner_dims"):
            dims = getattr(self, name)
            if dims is None:
                continue
            if not isinstance(dims, tuple) or not dims or not all(is_int(d) for d in dims):
                raise ValueError(
                    f"speculator config: {name!r} must be a non-empty tuple of ints, got {dims!r}"
                )
            if min(dims) < 1:
                raise ValueError(f"speculator config: {name!r} must be positive, got {dims!r}")
            if self.method == "sum_lstm" and len(dims) > 1:
                raise ValueError(
                    f"speculator config: {name}={_dotted(dims)!r}: a sum_lstm head has no "
                    "stacked layers"
                )
            first = self.inner_dim
            if name == "inner_dims":
                if dims[0] != first:
                    raise ValueError(
                        f"speculator config: inner_dim {_dotted(dims)!r} must start with the "
                        f"mixing width {first} (emb_dim = proj_dim = inner_dim[0])"
                    )
            elif any(d != first for d in dims):
                raise ValueError(
                    f"speculator config: {name[:-1]} {_dotted(dims)!r}: every stacked width "
                    f"must equal {first} (each stacked layer's norm is as wide as its input)"
                )
        if self.base_model_archs is not None:
            _parse_archs(self.base_model_archs)

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
        """Build from a ``config.json`` dict (any of the released layouts).

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
        uses_lstm_layout = arch in LSTM_ARCHITECTURES or (arch is None and "input_hidden_dim" in d)

        raw_method = d.get("method")
        if raw_method is None:
            # ArcticTraining's LSTM-config class and Arctic Inference's loader
            # default to "sum_rnn" (an MLP head)
            raw_method = "sum_rnn" if uses_lstm_layout else "mlp"
        if uses_lstm_layout and raw_method not in ("sum_rnn", "sum_lstm"):
            raise ValueError(
                f"speculator config: unsupported method {raw_method!r} for "
                f"{arch or 'an input_hidden_dim config'} (supported: sum_rnn, sum_lstm)"
            )
        if raw_method in _MLP_METHODS:
            method = "mlp"
        elif raw_method in _LSTM_METHODS:
            method = "sum_lstm"
        else:
            raise ValueError(
                f"speculator config: unsupported method {raw_method!r} "
                f"(supported: {', '.join(_MLP_METHODS + _LSTM_METHODS)})"
            )
        if method == "sum_lstm" and not uses_lstm_layout:
            raise ValueError(
                f"speculator config: method 'sum_lstm' needs the ArcticLSTM layout "
                f"(architecture {LSTM_ARCHITECTURES[0]} with input_hidden_dim), got {arch!r}"
            )
        kind = f"{arch or 'no architecture'}, method={raw_method}"

        n_predict = _require(d, "n_predict", kind)
        if not is_int(n_predict):
            raise ValueError(f"speculator config: 'n_predict' must be an int, got {n_predict!r}")
        vocab_size = _parse_dim("vocab_size", _require(d, "vocab_size", kind))

        emb_dims = proj_dims = inner_dims = None
        if uses_lstm_layout:
            input_hidden_dim = _parse_dim("input_hidden_dim", _require(d, "input_hidden_dim", kind))
            raw = {k: _require(d, k, kind) for k in ("inner_dim", "proj_dim", "emb_dim")}
            dims = {k: _parse_dims(k, v) for k, v in raw.items()}
            inner_dim = dims["inner_dim"][0]
            emb_dim, proj_dim = dims["emb_dim"][0], dims["proj_dim"][0]
            if method == "sum_lstm":
                # Arctic Inference reads emb_dim[0], proj_dim[0], inner_dim[0]
                # and inner_dim[-1] of an LSTM head: one layer, all one width
                for k, ds in dims.items():
                    if any(x != inner_dim for x in ds):
                        raise ValueError(
                            f"speculator config: {k}={raw[k]!r}: a sum_lstm head is one layer "
                            f"whose every width equals inner_dim[0]={inner_dim}"
                        )
            else:
                emb_dims, proj_dims, inner_dims = (
                    tuple(dims[k]) if len(dims[k]) > 1 else None
                    for k in ("emb_dim", "proj_dim", "inner_dim")
                )
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
            emb_dims=emb_dims,
            proj_dims=proj_dims,
            inner_dims=inner_dims,
            base_model_archs=_parse_archs(d.get("base_model_archs")),
        )

    def to_dict(self) -> dict[str, Any]:
        """Serialise to the released ``config.json`` layout of :attr:`layout`,
        which Arctic Inference's ``arctic`` method reads:

        * ``"mlp"``: ``ArcticMLPSpeculatorPreTrainedModel`` (or the IBM
          ``MLPSpeculatorPreTrainedModel`` it was read as, vLLM's own
          ``mlp_speculator``), ``emb_dim`` = base hidden size
          (``input_hidden_dim`` is added for clarity);
        * ``"sum_rnn"``: ``ArcticLSTMSpeculatorPreTrainedModel`` (or
          ``MLPVariantSpeculatorPreTrainedModel``) with ``method: "sum_rnn"``
          and dotted-string widths;
        * ``"sum_lstm"``: the same architectures with ``method: "sum_lstm"``.

        ``top_k_tokens_per_head`` has ``n_predict`` entries (vLLM's config
        class asserts that).
        """
        d: dict[str, Any] = dict(self.extra)
        d.update(
            {
                "model_type": "mlp_speculator",
                "n_predict": self.n_predict,
                "n_candidates": self.n_predict,
                "top_k_tokens_per_head": [1] * self.n_predict,
                "vocab_size": self.vocab_size,
                "tie_weights": self.tie_weights,
                "scale_input": self.scale_input,
                "base_model_name_or_path": self.base_model_name_or_path,
            }
        )
        if self.base_model_archs is not None:
            d["base_model_archs"] = list(self.base_model_archs)
        layout = self.layout
        if layout == "mlp":
            arch = (
                self.architecture
                if self.architecture in MLP_ARCHITECTURES
                else "ArcticMLPSpeculatorPreTrainedModel"
            )
            d.update(
                {
                    "architectures": [arch],
                    "emb_dim": self.input_hidden_dim,
                    "inner_dim": self.inner_dim,
                    "input_hidden_dim": self.input_hidden_dim,
                }
            )
            return d
        arch = (
            self.architecture
            if self.architecture in LSTM_ARCHITECTURES
            else "ArcticLSTMSpeculatorPreTrainedModel"
        )
        assert self.emb_dim is not None and self.proj_dim is not None  # set in __post_init__
        d.update(
            {
                "architectures": [arch],
                "method": layout,
                "input_hidden_dim": self.input_hidden_dim,
                "inner_dim": _dotted(self.inner_dims or (self.inner_dim,)),
                "proj_dim": _dotted(self.proj_dims or (self.proj_dim,)),
                "emb_dim": _dotted(self.emb_dims or (self.emb_dim,)),
                # Arctic Inference reads this key for both methods
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
