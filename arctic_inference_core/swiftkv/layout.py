"""SwiftKV / AcrossKV layer bookkeeping (pure Python, no torch).

Terminology (absolute layer indices ``0 .. num_hidden_layers - 1``):

- layers ``0 .. num_key_value_layers - 1`` are *full* layers: every token runs
  through them and they compute their own K/V as usual;
- layers ``num_key_value_layers .. num_hidden_layers - 1`` are *later* (SwiftKV)
  layers: their K/V come from one stacked projection of the normalized hidden
  state after layer ``num_key_value_layers - 1``;
- with AcrossKV, ``key_value_group_size`` adjacent later layers share one K/V
  *slot*: later layer ``num_key_value_layers + i`` reads slot
  ``i // key_value_group_size``. There are
  ``ceil(num_later_layers / key_value_group_size)`` slots; when the group size
  does not divide the number of later layers, the last group is smaller.
"""

from __future__ import annotations

from dataclasses import dataclass

from arctic_inference_core._validate import check_int

__all__ = ["SwiftKVLayout", "kv_slot_for_layer", "num_kv_slots"]


def num_kv_slots(num_later_layers: int, key_value_group_size: int = 1) -> int:
    """Number of K/V slots produced for ``num_later_layers`` later layers:
    ``ceil(num_later_layers / key_value_group_size)``."""
    check_int("num_later_layers", num_later_layers, 1)
    check_int("key_value_group_size", key_value_group_size, 1)
    return -(-num_later_layers // key_value_group_size)


def kv_slot_for_layer(
    layer_idx: int,
    num_key_value_layers: int,
    num_hidden_layers: int,
    key_value_group_size: int = 1,
) -> int:
    """K/V slot (index into the first axis of :func:`swiftkv_project`'s outputs)
    that absolute decoder layer ``layer_idx`` reads.

    Raises ``ValueError`` for a full layer (``layer_idx < num_key_value_layers``,
    it has its own K/V) or an index outside the model.
    """
    layout = SwiftKVLayout(
        num_hidden_layers=num_hidden_layers,
        num_key_value_layers=num_key_value_layers,
        key_value_group_size=key_value_group_size,
    )
    return layout.slot_for_layer(layer_idx)


@dataclass(frozen=True)
class SwiftKVLayout:
    """Validated SwiftKV/AcrossKV layer configuration.

    ``num_kv_heads``/``head_dim``/``hidden_size`` are optional; when given,
    :attr:`kv_size` and :attr:`weight_rows` describe the stacked projection.
    """

    num_hidden_layers: int
    num_key_value_layers: int
    key_value_group_size: int = 1
    num_kv_heads: int | None = None
    head_dim: int | None = None
    hidden_size: int | None = None

    def __post_init__(self) -> None:
        check_int("num_hidden_layers", self.num_hidden_layers, 2)
        check_int("num_key_value_layers", self.num_key_value_layers, 0)
        if not 1 <= self.num_key_value_layers <= self.num_hidden_layers - 1:
            raise ValueError(
                f"num_key_value_layers must be in [1, num_hidden_layers - 1] = "
                f"[1, {self.num_hidden_layers - 1}], got {self.num_key_value_layers} "
                f"(at least one full layer feeds the projection and at least one later "
                f"layer must use it)"
            )
        check_int("key_value_group_size", self.key_value_group_size, 1)
        if self.key_value_group_size > self.num_later_layers:
            raise ValueError(
                f"key_value_group_size ({self.key_value_group_size}) is larger than the "
                f"number of later layers ({self.num_later_layers} = num_hidden_layers "
                f"{self.num_hidden_layers} - num_key_value_layers {self.num_key_value_layers})"
            )
        if self.num_kv_heads is not None:
            check_int("num_kv_heads", self.num_kv_heads, 1)
        if self.head_dim is not None:
            check_int("head_dim", self.head_dim, 2)
            if self.head_dim % 2:
                raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")
        if self.hidden_size is not None:
            check_int("hidden_size", self.hidden_size, 1)

    @property
    def num_later_layers(self) -> int:
        """Layers whose K/V come from the SwiftKV projection."""
        return self.num_hidden_layers - self.num_key_value_layers

    @property
    def num_kv_slots(self) -> int:
        """K/V slots produced (``ceil(num_later_layers / key_value_group_size)``)."""
        return num_kv_slots(self.num_later_layers, self.key_value_group_size)

    @property
    def kv_size(self) -> int:
        """``num_kv_heads * head_dim`` (rows of one layer's k_proj or v_proj)."""
        if self.num_kv_heads is None or self.head_dim is None:
            raise ValueError("kv_size needs num_kv_heads and head_dim")
        return self.num_kv_heads * self.head_dim

    @property
    def weight_rows(self) -> int:
        """Rows of the stacked weight: ``num_kv_slots * 2 * num_kv_heads * head_dim``."""
        return self.num_kv_slots * 2 * self.kv_size

    def is_swiftkv_layer(self, layer_idx: int) -> bool:
        """Whether ``layer_idx`` is a later layer (K/V from the projection)."""
        self._check_layer(layer_idx)
        return layer_idx >= self.num_key_value_layers

    def slot_for_layer(self, layer_idx: int) -> int:
        """K/V slot that later layer ``layer_idx`` (absolute index) reads."""
        self._check_layer(layer_idx)
        if layer_idx < self.num_key_value_layers:
            raise ValueError(
                f"layer {layer_idx} is a full layer (num_key_value_layers="
                f"{self.num_key_value_layers}); it computes its own K/V and has no SwiftKV slot"
            )
        return (layer_idx - self.num_key_value_layers) // self.key_value_group_size

    def layers_for_slot(self, slot: int) -> range:
        """Absolute indices of the later layers sharing ``slot``."""
        check_int("slot", slot, 0)
        if slot >= self.num_kv_slots:
            raise ValueError(f"slot must be < num_kv_slots={self.num_kv_slots}, got {slot}")
        start = self.num_key_value_layers + slot * self.key_value_group_size
        return range(start, min(start + self.key_value_group_size, self.num_hidden_layers))

    def _check_layer(self, layer_idx: int) -> None:
        check_int("layer_idx", layer_idx, 0)
        if layer_idx >= self.num_hidden_layers:
            raise ValueError(
                f"layer_idx must be < num_hidden_layers={self.num_hidden_layers}, got {layer_idx}"
            )
