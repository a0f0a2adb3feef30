"""SwiftKV projection ops (PyTorch).

Stacked weight layout (the contract between :func:`stack_kv_weights`,
:func:`swiftkv_project` and :func:`reference_project`)::

    weight_kv: [num_layers * 2 * num_kv_heads * head_dim, hidden]

    rows = [ K_0 | K_1 | ... | K_{n-1} | V_0 | V_1 | ... | V_{n-1} ]

i.e. all K blocks first, then all V blocks ("kv-major"); block ``K_s`` (and
``V_s``) has ``num_kv_heads * head_dim`` rows and is exactly the ``k_proj``
(``v_proj``) weight of slot ``s`` in Hugging Face Llama layout (head-major:
row ``h * head_dim + d``). ``num_layers`` is the number of K/V *slots*, which
is the number of later layers, or ``ceil(later / key_value_group_size)`` with
AcrossKV. An optional bias ``[rows]`` uses the same order.

Outputs are ``k, v`` each contiguous ``[num_layers, tokens, num_kv_heads,
head_dim]``; ``k[s]`` / ``v[s]`` is the ``[tokens, heads, head_dim]`` tensor a
paged-KV-cache write (e.g. vLLM ``reshape_and_cache``) takes for one layer. RoPE
(Llama ``rotate_half`` convention, full ``head_dim`` rotary) is applied to K
only; V is left as projected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from arctic_inference_core._optional import require_torch
from arctic_inference_core._validate import check_int

require_torch("swiftkv")
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from arctic_inference_core.swiftkv.layout import SwiftKVLayout, num_kv_slots  # noqa: E402

__all__ = [
    "SwiftKVProjection",
    "apply_rope",
    "reference_project",
    "rope_cos_sin",
    "split_kv_weights",
    "stack_kv_weights",
    "swiftkv_project",
]


# ---------------------------------------------------------------------------
# validation helpers


def _check_dims(num_layers: int, num_kv_heads: int, head_dim: int) -> None:
    check_int("num_layers", num_layers, 1)
    check_int("num_kv_heads", num_kv_heads, 1)
    check_int("head_dim", head_dim, 2)
    if head_dim % 2:
        raise ValueError(f"head_dim must be even for RoPE, got {head_dim}")


def _validate(
    hidden: torch.Tensor,
    weight_kv: torch.Tensor,
    num_layers: int,
    num_kv_heads: int,
    head_dim: int,
    cos: torch.Tensor,
    sin: torch.Tensor,
    bias: torch.Tensor | None,
) -> None:
    _check_dims(num_layers, num_kv_heads, head_dim)
    if hidden.dim() != 2:
        raise ValueError(f"hidden must be 2-D [tokens, hidden], got shape {tuple(hidden.shape)}")
    if weight_kv.dim() != 2:
        raise ValueError(
            f"weight_kv must be 2-D [num_layers * 2 * num_kv_heads * head_dim, hidden], "
            f"got shape {tuple(weight_kv.shape)}"
        )
    rows = num_layers * 2 * num_kv_heads * head_dim
    if weight_kv.shape[0] != rows:
        raise ValueError(
            f"weight_kv has {weight_kv.shape[0]} rows, expected num_layers * 2 * num_kv_heads * "
            f"head_dim = {num_layers} * 2 * {num_kv_heads} * {head_dim} = {rows}"
        )
    if weight_kv.shape[1] != hidden.shape[1]:
        raise ValueError(
            f"weight_kv has {weight_kv.shape[1]} columns but hidden size is {hidden.shape[1]}"
        )
    if bias is not None and tuple(bias.shape) != (rows,):
        raise ValueError(f"bias must have shape ({rows},), got {tuple(bias.shape)}")
    tokens = hidden.shape[0]
    for name, t in (("cos", cos), ("sin", sin)):
        if tuple(t.shape) != (tokens, head_dim):
            raise ValueError(
                f"{name} must have shape [tokens, head_dim] = ({tokens}, {head_dim}), "
                f"got {tuple(t.shape)}"
            )
    if not hidden.is_floating_point():
        raise ValueError(f"hidden must be a floating-point tensor, got {hidden.dtype}")
    if weight_kv.dtype != hidden.dtype:
        raise ValueError(f"weight_kv dtype {weight_kv.dtype} != hidden dtype {hidden.dtype}")
    if bias is not None and bias.dtype != hidden.dtype:
        raise ValueError(f"bias dtype {bias.dtype} != hidden dtype {hidden.dtype}")


# ---------------------------------------------------------------------------
# RoPE


def rope_cos_sin(
    positions: torch.Tensor,
    head_dim: int,
    base: float = 10000.0,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Default (unscaled) Llama RoPE tables for ``positions`` ``[tokens]``:
    returns ``cos, sin`` each ``[tokens, head_dim]`` (frequencies duplicated
    across both halves, as in Hugging Face ``LlamaRotaryEmbedding``)."""
    _check_dims(1, 1, head_dim)
    if positions.dim() != 1:
        raise ValueError(f"positions must be 1-D [tokens], got shape {tuple(positions.shape)}")
    inv_freq = 1.0 / (
        base
        ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim)
    )
    freqs = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x * cos + rotate_half(x) * sin`` for ``x`` ``[..., tokens, heads, head_dim]``
    and ``cos``/``sin`` ``[tokens, head_dim]`` (cast to ``x.dtype``, like HF Llama)."""
    half = x.shape[-1] // 2
    cos = cos.to(x.dtype)[:, None, :]
    sin = sin.to(x.dtype)[:, None, :]
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


# ---------------------------------------------------------------------------
# projection


def swiftkv_project(
    hidden: torch.Tensor,
    weight_kv: torch.Tensor,
    num_layers: int,
    num_kv_heads: int,
    head_dim: int,
    cos: torch.Tensor,
    sin: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """K/V of all SwiftKV slots from one normalized hidden state (fast path).

    Args:
        hidden: ``[tokens, hidden]``, already normalized (SwiftKV's
            ``norm_swiftkv`` applied to the output of the last full layer).
        weight_kv: stacked weight ``[num_layers * 2 * num_kv_heads * head_dim,
            hidden]``, kv-major (see module docstring / :func:`stack_kv_weights`).
        num_layers: number of K/V slots in ``weight_kv`` (later layers, or
            AcrossKV groups).
        num_kv_heads, head_dim: per-layer K/V geometry.
        cos, sin: RoPE tables ``[tokens, head_dim]`` for each token's position.
        bias: optional ``[rows]`` bias in the same order as ``weight_kv``.

    Returns:
        ``(k, v)``, each contiguous ``[num_layers, tokens, num_kv_heads,
        head_dim]`` in ``hidden.dtype``; RoPE applied to ``k``.

    One GEMM (``F.linear``) for all slots, then one vectorized RoPE over all
    slots that writes K in cache layout; V is one strided copy. Differentiable
    (when any input requires grad, RoPE uses out-of-place ops).
    """
    _validate(hidden, weight_kv, num_layers, num_kv_heads, head_dim, cos, sin, bias)
    tokens = hidden.shape[0]
    out = F.linear(hidden, weight_kv, bias)  # [tokens, rows]
    out = out.view(tokens, 2, num_layers, num_kv_heads, head_dim)
    k = out[:, 0].permute(1, 0, 2, 3)  # [L, T, H, D] view (strided)
    v = out[:, 1].permute(1, 0, 2, 3).contiguous()
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (hidden, weight_kv, bias, cos, sin)
    )
    if needs_grad:  # autograd path (training / distillation): out= ops are not differentiable
        return apply_rope(k, cos, sin).contiguous(), v
    half = head_dim // 2
    cos_b = cos.to(hidden.dtype)[:, None, :]  # [T, 1, D]
    sin_b = sin.to(hidden.dtype)[:, None, :]
    k_out = torch.empty(
        (num_layers, tokens, num_kv_heads, head_dim), dtype=hidden.dtype, device=hidden.device
    )
    # k_out = k * cos + rotate_half(k) * sin, written straight into the contiguous output.
    torch.mul(k, cos_b, out=k_out)
    k_out[..., :half].addcmul_(k[..., half:], sin_b[..., :half], value=-1)
    k_out[..., half:].addcmul_(k[..., :half], sin_b[..., half:])
    return k_out, v


def reference_project(
    hidden: torch.Tensor,
    weight_kv: torch.Tensor,
    num_layers: int,
    num_kv_heads: int,
    head_dim: int,
    cos: torch.Tensor,
    sin: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-slot reference of :func:`swiftkv_project` (same arguments/results).

    Loops over slots, doing a separate ``k_proj``/``v_proj`` linear and HF-style
    RoPE for each, exactly like an unmodified Llama attention layer would. Used
    by the tests and as a simple CPU fallback.
    """
    _validate(hidden, weight_kv, num_layers, num_kv_heads, head_dim, cos, sin, bias)
    kv_size = num_kv_heads * head_dim
    ks: list[torch.Tensor] = []
    vs: list[torch.Tensor] = []
    for s in range(num_layers):
        k_rows = slice(s * kv_size, (s + 1) * kv_size)
        v_rows = slice((num_layers + s) * kv_size, (num_layers + s + 1) * kv_size)
        k_b = None if bias is None else bias[k_rows]
        v_b = None if bias is None else bias[v_rows]
        k = F.linear(hidden, weight_kv[k_rows], k_b).view(-1, num_kv_heads, head_dim)
        v = F.linear(hidden, weight_kv[v_rows], v_b).view(-1, num_kv_heads, head_dim)
        ks.append(apply_rope(k, cos, sin))
        vs.append(v)
    return torch.stack(ks), torch.stack(vs)


# ---------------------------------------------------------------------------
# weight conversion


def stack_kv_weights(
    k_weights: Sequence[torch.Tensor],
    v_weights: Sequence[torch.Tensor],
    group_size: int = 1,
    reduce: Literal["first", "mean"] = "first",
) -> torch.Tensor:
    """Build the stacked (kv-major) SwiftKV weight from per-layer weights.

    Args:
        k_weights, v_weights: one ``k_proj`` / ``v_proj`` weight per later layer
            (in layer order), each ``[num_kv_heads * head_dim, hidden]``. 1-D
            biases ``[num_kv_heads * head_dim]`` work the same way and give the
            matching stacked bias.
        group_size: AcrossKV group size; layers ``[g * group_size, (g + 1) *
            group_size)`` (the last group may be shorter) become slot ``g``.
        reduce: how a group becomes one slot. ``"first"`` (default) takes the
            first layer of each group: the right choice when converting a
            trained AcrossKV checkpoint (which stores one K/V projection per
            group, on its first layer) and exact for ``group_size=1``.
            ``"mean"`` averages the group (in float32, cast back), a common
            initialization before AcrossKV distillation.

    Returns:
        ``[num_slots * 2 * rows, ...]``: ``[K_0 .. K_{n-1}, V_0 .. V_{n-1}]``
        with ``num_slots = ceil(len(k_weights) / group_size)``.
    """
    if len(k_weights) == 0:
        raise ValueError("k_weights is empty: need one k_proj weight per later layer")
    if len(k_weights) != len(v_weights):
        raise ValueError(
            f"got {len(k_weights)} k weights but {len(v_weights)} v weights (need one of each per layer)"
        )
    if reduce not in ("first", "mean"):
        raise ValueError(f"reduce must be 'first' or 'mean', got {reduce!r}")
    slots = num_kv_slots(len(k_weights), group_size)
    ref = k_weights[0]
    if ref.dim() not in (1, 2):
        raise ValueError(f"weights must be 2-D (or 1-D biases), got shape {tuple(ref.shape)}")
    for name, ws in (("k_weights", k_weights), ("v_weights", v_weights)):
        for i, w in enumerate(ws):
            if w.shape != ref.shape:
                raise ValueError(
                    f"{name}[{i}] has shape {tuple(w.shape)}, expected {tuple(ref.shape)} "
                    f"(all layers must share num_kv_heads * head_dim and hidden size)"
                )
            if w.dtype != ref.dtype:
                raise ValueError(f"{name}[{i}] has dtype {w.dtype}, expected {ref.dtype}")

    def group(ws: Sequence[torch.Tensor], g: int) -> torch.Tensor:
        members = ws[g * group_size : (g + 1) * group_size]
        if reduce == "first":
            return members[0]
        return torch.stack([m.float() for m in members]).mean(0).to(ref.dtype)

    ks = [group(k_weights, g) for g in range(slots)]
    vs = [group(v_weights, g) for g in range(slots)]
    return torch.cat(ks + vs, dim=0).contiguous()


def split_kv_weights(
    weight_kv: torch.Tensor, num_layers: int, num_kv_heads: int, head_dim: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Inverse of :func:`stack_kv_weights` (with ``group_size=1``): per-slot
    ``k_proj`` and ``v_proj`` weights (views) of a stacked weight or bias."""
    _check_dims(num_layers, num_kv_heads, head_dim)
    kv_size = num_kv_heads * head_dim
    rows = num_layers * 2 * kv_size
    if weight_kv.dim() not in (1, 2) or weight_kv.shape[0] != rows:
        raise ValueError(
            f"weight_kv must have {rows} rows (num_layers * 2 * num_kv_heads * head_dim = "
            f"{num_layers} * 2 * {num_kv_heads} * {head_dim}), got shape {tuple(weight_kv.shape)}"
        )
    blocks = list(weight_kv.split(kv_size, dim=0))
    return blocks[:num_layers], blocks[num_layers:]


# ---------------------------------------------------------------------------
# module


class SwiftKVProjection(nn.Module):
    """Stacked SwiftKV K/V projection for all later layers of one model.

    Holds ``weight`` ``[layout.weight_rows, hidden_size]`` (kv-major, see
    :func:`stack_kv_weights`) and an optional ``bias``. ``forward(hidden, cos,
    sin)`` returns ``(k, v)`` each ``[num_kv_slots, tokens, num_kv_heads,
    head_dim]``; later layer ``i`` reads slot ``layout.slot_for_layer(i)``.
    """

    def __init__(
        self,
        layout: SwiftKVLayout,
        bias: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        use_reference: bool = False,
    ) -> None:
        super().__init__()
        if layout.num_kv_heads is None or layout.head_dim is None or layout.hidden_size is None:
            raise ValueError(
                "SwiftKVProjection needs a layout with num_kv_heads, head_dim and hidden_size"
            )
        self.layout = layout
        self.use_reference = use_reference
        rows, cols = layout.weight_rows, layout.hidden_size
        self.weight = nn.Parameter(torch.empty(rows, cols, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(rows, device=device, dtype=dtype)) if bias else None
        nn.init.normal_(self.weight, std=layout.hidden_size**-0.5)

    def forward(
        self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(k, v)`` for all slots; see :func:`swiftkv_project`."""
        fn = reference_project if self.use_reference else swiftkv_project
        lay = self.layout
        assert lay.num_kv_heads is not None and lay.head_dim is not None
        return fn(
            hidden,
            self.weight,
            lay.num_kv_slots,
            lay.num_kv_heads,
            lay.head_dim,
            cos,
            sin,
            self.bias,
        )

    @torch.no_grad()
    def load_per_layer(
        self,
        k_weights: Sequence[torch.Tensor],
        v_weights: Sequence[torch.Tensor],
        k_biases: Sequence[torch.Tensor] | None = None,
        v_biases: Sequence[torch.Tensor] | None = None,
        reduce: Literal["first", "mean"] = "first",
    ) -> None:
        """Fill ``weight`` (and ``bias``) from the later layers' ``k_proj``/``v_proj``
        (one per later layer, in order), grouped per ``layout.key_value_group_size``."""
        if len(k_weights) != self.layout.num_later_layers:
            raise ValueError(
                f"expected {self.layout.num_later_layers} per-layer weights (one per later layer), "
                f"got {len(k_weights)}"
            )
        w = stack_kv_weights(k_weights, v_weights, self.layout.key_value_group_size, reduce)
        if w.shape != self.weight.shape:
            raise ValueError(
                f"stacked weight has shape {tuple(w.shape)}, expected {tuple(self.weight.shape)}"
            )
        self.weight.copy_(w)
        if (k_biases is None) != (v_biases is None):
            raise ValueError("give both k_biases and v_biases or neither")
        if k_biases is not None and v_biases is not None:
            if self.bias is None:
                raise ValueError("this projection was built with bias=False")
            self.bias.copy_(
                stack_kv_weights(k_biases, v_biases, self.layout.key_value_group_size, reduce)
            )

    def extra_repr(self) -> str:
        lay = self.layout
        return (
            f"slots={lay.num_kv_slots}, num_kv_heads={lay.num_kv_heads}, head_dim={lay.head_dim}, "
            f"hidden_size={lay.hidden_size}, group_size={lay.key_value_group_size}, "
            f"bias={self.bias is not None}"
        )
