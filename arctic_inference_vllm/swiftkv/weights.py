"""Which tensors of a released SwiftKV checkpoint (ArcticTraining's
``LlamaSwiftKV`` layout, docs/swiftkv.md) the vLLM model reads, and the
checks around its loader: a SwiftKV tensor the layout does not have is an
error naming it, the tensors the served path does not use are dropped
(with SwiftKV on, the later layers' original ``q/k/v_proj``; off, every
``*_swiftkv``), and a module the served path needs that got no tensor is an
error naming it. Names are the checkpoint's (before vLLM's stacking)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_ALWAYS = ("input_layernorm", "post_attention_layernorm", "self_attn.o_proj") + tuple(
    f"mlp.{m}_proj" for m in ("gate", "up", "down")
)


def _ints(config: Any) -> tuple[int, int, int]:
    return (
        int(config.num_hidden_layers),
        int(config.num_key_value_layers),
        int(config.key_value_group_size),
    )


def swiftkv_modules(config: Any) -> set[str]:
    """The modules SwiftKV adds in the released layout: ``model.norm_swiftkv``,
    ``q_proj_swiftkv`` on layers ``>= n``, ``k/v_proj_swiftkv`` on the first
    layer of each group."""
    total, n, g = _ints(config)
    mods = {"model.norm_swiftkv"} if n < total else set()
    for i in range(n, total):
        mods.add(f"model.layers.{i}.self_attn.q_proj_swiftkv")
        if (i - n) % g == 0:
            mods |= {f"model.layers.{i}.self_attn.{p}_proj_swiftkv" for p in "kv"}
    return mods


def read_modules(config: Any, swiftkv: bool) -> set[str]:
    """The modules whose tensors the served model reads."""
    total, n, _ = _ints(config)
    own_kv = n if swiftkv else total
    mods = {"model.embed_tokens", "model.norm"}
    if not getattr(config, "tie_word_embeddings", False):
        mods.add("lm_head")
    for i in range(total):
        mods |= {f"model.layers.{i}.{m}" for m in _ALWAYS}
        if i < own_kv:
            mods |= {f"model.layers.{i}.self_attn.{p}_proj" for p in "qkv"}
    if swiftkv:
        mods |= swiftkv_modules(config)
    return mods


def _module(name: str) -> str:
    return name.rsplit(".", 1)[0]


class CheckedWeights:
    """Wraps the checkpoint's ``(name, tensor)`` stream for the loader:
    drops what the served path does not read, raises on SwiftKV tensors the
    layout does not have, and remembers which modules got tensors
    (:meth:`check_complete` after loading)."""

    def __init__(self, config: Any, swiftkv: bool) -> None:
        self.config = config
        self.swiftkv = swiftkv
        self.layout_swiftkv = swiftkv_modules(config)
        self.read = read_modules(config, swiftkv)
        self.seen: set[str] = set()
        total, n, _ = _ints(config)
        self._unread_layers = range(n, total) if swiftkv else range(0)

    def _dropped(self, name: str, module: str) -> bool:
        if "swiftkv" in name:
            if module not in self.layout_swiftkv:
                total, n, g = _ints(self.config)
                raise ValueError(
                    f"unexpected weight {name!r} in a LlamaSwiftKV checkpoint with "
                    f"num_hidden_layers={total}, num_key_value_layers={n}, "
                    f"key_value_group_size={g}: the released layout has q_proj_swiftkv on "
                    f"layers >= {n} and k/v_proj_swiftkv on the first layer of each group "
                    f"of {g} (docs/swiftkv.md)"
                )
            return not self.swiftkv
        if name.startswith("lm_head.") and getattr(self.config, "tie_word_embeddings", False):
            return True  # tied to the embedding
        m = _LAYER.match(name)
        if m and int(m.group(1)) in self._unread_layers:
            # a later layer's original q/k/v_proj: never loaded into the SwiftKV path
            return m.group(2).startswith(
                ("self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.")
            )
        return False

    def __call__(self, weights: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
        for name, tensor in weights:
            module = _module(name)
            if self._dropped(name, module):
                continue
            self.seen.add(module)
            yield name, tensor

    def check_complete(self) -> None:
        missing = sorted(self.read - self.seen)
        if missing:
            raise ValueError(
                f"the checkpoint has no weights for {', '.join(m + '.*' for m in missing)} "
                f"(LlamaSwiftKV layout with swiftkv={self.swiftkv}; docs/swiftkv.md)"
            )
