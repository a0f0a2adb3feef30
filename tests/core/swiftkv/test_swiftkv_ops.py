"""SwiftKV ops: fast path vs per-layer reference, HF RoPE oracle, weight
stacking, AcrossKV slot mapping, error messages."""

from __future__ import annotations

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from arctic_inference_core.swiftkv import (  # noqa: E402
    SwiftKVLayout,
    SwiftKVProjection,
    kv_slot_for_layer,
    num_kv_slots,
    reference_project,
    rope_cos_sin,
    split_kv_weights,
    stack_kv_weights,
    swiftkv_project,
)

TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.bfloat16: dict(atol=3e-2, rtol=2e-2)}

shape_st = st.fixed_dictionaries(
    {
        "tokens": st.integers(1, 17),
        "hidden": st.integers(16, 96),
        "heads": st.integers(1, 4),
        "head_dim": st.sampled_from([8, 16, 32]),
        "later": st.integers(1, 5),
        "group": st.integers(1, 3),
        "bias": st.booleans(),
        "seed": st.integers(0, 2**16),
    }
)


def _make(s: dict, dtype: torch.dtype):
    g = torch.Generator().manual_seed(s["seed"])
    n_kv = s["heads"] * s["head_dim"]
    hid = torch.randn(s["tokens"], s["hidden"], generator=g)
    ks = [
        torch.randn(n_kv, s["hidden"], generator=g) * s["hidden"] ** -0.5 for _ in range(s["later"])
    ]
    vs = [
        torch.randn(n_kv, s["hidden"], generator=g) * s["hidden"] ** -0.5 for _ in range(s["later"])
    ]
    kb = [torch.randn(n_kv, generator=g) * 0.1 for _ in range(s["later"])]
    vb = [torch.randn(n_kv, generator=g) * 0.1 for _ in range(s["later"])]
    pos = torch.randint(0, 4096, (s["tokens"],), generator=g)
    cos, sin = rope_cos_sin(pos, s["head_dim"])
    return hid.to(dtype), [k.to(dtype) for k in ks], [v.to(dtype) for v in vs], kb, vb, cos, sin


def _hf_layer(hid, k_w, v_w, k_b, v_b, heads, head_dim, cos, sin):
    """One unmodified HF Llama attention layer's K/V (independent oracle)."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    t = hid.shape[0]
    k = F.linear(hid, k_w, k_b).view(1, t, heads, head_dim).transpose(1, 2)  # [1, H, T, D]
    v = F.linear(hid, v_w, v_b).view(t, heads, head_dim)
    c, s_ = cos.to(hid.dtype)[None], sin.to(hid.dtype)[None]
    _, k = apply_rotary_pos_emb(k, k, c, s_)
    return k[0].transpose(0, 1), v


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@settings(max_examples=40, deadline=None)
@given(s=shape_st)
def test_fast_path_matches_reference(dtype: torch.dtype, s: dict) -> None:
    hid, ks, vs, kb, vb, cos, sin = _make(s, dtype)
    slots = num_kv_slots(s["later"], s["group"])
    w = stack_kv_weights(ks, vs, s["group"])
    b = (
        stack_kv_weights([x.to(dtype) for x in kb], [x.to(dtype) for x in vb], s["group"])
        if s["bias"]
        else None
    )
    k, v = swiftkv_project(hid, w, slots, s["heads"], s["head_dim"], cos, sin, bias=b)
    kr, vr = reference_project(hid, w, slots, s["heads"], s["head_dim"], cos, sin, bias=b)
    shape = (slots, s["tokens"], s["heads"], s["head_dim"])
    assert k.shape == v.shape == kr.shape == vr.shape == shape
    assert k.dtype == v.dtype == dtype
    assert k.is_contiguous() and v.is_contiguous()
    torch.testing.assert_close(k, kr, **TOL[dtype])
    torch.testing.assert_close(v, vr, **TOL[dtype])
    if dtype == torch.bfloat16:  # and close to the float32 computation on the same inputs
        k32, v32 = swiftkv_project(
            hid.float(),
            w.float(),
            slots,
            s["heads"],
            s["head_dim"],
            cos,
            sin,
            bias=None if b is None else b.float(),
        )
        torch.testing.assert_close(k.float(), k32, atol=6e-2, rtol=3e-2)
        torch.testing.assert_close(v.float(), v32, atol=6e-2, rtol=3e-2)


@settings(max_examples=25, deadline=None)
@given(s=shape_st)
def test_matches_hf_llama_per_layer(s: dict) -> None:
    """Every later layer's K/V (via its AcrossKV slot, reduce='first') equals what an
    unmodified HF Llama attention computes with that group's first k/v_proj."""
    pytest.importorskip("transformers")
    hid, ks, vs, kb, vb, cos, sin = _make(s, torch.float32)
    layout = SwiftKVLayout(
        num_hidden_layers=s["later"] + 2,
        num_key_value_layers=2,
        key_value_group_size=min(s["group"], s["later"]),
        num_kv_heads=s["heads"],
        head_dim=s["head_dim"],
        hidden_size=s["hidden"],
    )
    proj = SwiftKVProjection(layout, bias=True)
    proj.load_per_layer(ks, vs, kb, vb)
    with torch.no_grad():
        k, v = proj(hid, cos, sin)
    for layer in range(layout.num_key_value_layers, layout.num_hidden_layers):
        slot = layout.slot_for_layer(layer)
        first = layout.layers_for_slot(slot)[0] - layout.num_key_value_layers
        ek, ev = _hf_layer(
            hid, ks[first], vs[first], kb[first], vb[first], s["heads"], s["head_dim"], cos, sin
        )
        torch.testing.assert_close(k[slot], ek, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(v[slot], ev, atol=1e-5, rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(s=shape_st)
def test_stack_split_round_trip(s: dict) -> None:
    _, ks, vs, kb, vb, _, _ = _make(s, torch.float32)
    w = stack_kv_weights(ks, vs)
    assert w.shape == (s["later"] * 2 * s["heads"] * s["head_dim"], s["hidden"])
    k2, v2 = split_kv_weights(w, s["later"], s["heads"], s["head_dim"])
    assert all(torch.equal(a, b) for a, b in zip(ks + vs, k2 + v2))
    b = stack_kv_weights(kb, vb)
    kb2, vb2 = split_kv_weights(b, s["later"], s["heads"], s["head_dim"])
    assert all(torch.equal(a, c) for a, c in zip(kb + vb, kb2 + vb2))
    # AcrossKV: slot g is the first layer of group g ("first") or the group mean ("mean").
    g = s["group"]
    slots = num_kv_slots(s["later"], g)
    kf, vf = split_kv_weights(stack_kv_weights(ks, vs, g), slots, s["heads"], s["head_dim"])
    km, vm = split_kv_weights(
        stack_kv_weights(ks, vs, g, reduce="mean"), slots, s["heads"], s["head_dim"]
    )
    for slot in range(slots):
        members = range(slot * g, min((slot + 1) * g, s["later"]))
        assert torch.equal(kf[slot], ks[members[0]]) and torch.equal(vf[slot], vs[members[0]])
        torch.testing.assert_close(km[slot], torch.stack([ks[i] for i in members]).mean(0))
        torch.testing.assert_close(vm[slot], torch.stack([vs[i] for i in members]).mean(0))


def test_stacking_order_is_kv_major() -> None:
    ks = [torch.full((4, 3), float(i)) for i in range(3)]
    vs = [torch.full((4, 3), 10.0 + i) for i in range(3)]
    w = stack_kv_weights(ks, vs)
    assert w[::4, 0].tolist() == [0.0, 1.0, 2.0, 10.0, 11.0, 12.0]


def test_slot_mapping_example() -> None:
    lay = SwiftKVLayout(num_hidden_layers=10, num_key_value_layers=3, key_value_group_size=3)
    assert lay.num_later_layers == 7 and lay.num_kv_slots == 3
    assert [lay.slot_for_layer(i) for i in range(3, 10)] == [0, 0, 0, 1, 1, 1, 2]
    assert list(lay.layers_for_slot(2)) == [9]
    assert [lay.is_swiftkv_layer(i) for i in (0, 2, 3, 9)] == [False, False, True, True]
    assert (
        kv_slot_for_layer(7, num_key_value_layers=3, num_hidden_layers=10, key_value_group_size=2)
        == 2
    )


@settings(max_examples=100, deadline=None)
@given(n=st.integers(2, 80), data=st.data())
def test_slot_mapping_properties(n: int, data) -> None:
    kvl = data.draw(st.integers(1, n - 1))
    g = data.draw(st.integers(1, n - kvl))
    lay = SwiftKVLayout(num_hidden_layers=n, num_key_value_layers=kvl, key_value_group_size=g)
    assert lay.num_kv_slots == -(-(n - kvl) // g)
    covered = [i for s in range(lay.num_kv_slots) for i in lay.layers_for_slot(s)]
    assert covered == list(range(kvl, n))  # slots partition the later layers, in order
    for s in range(lay.num_kv_slots):
        assert all(lay.slot_for_layer(i) == s for i in lay.layers_for_slot(s))
        assert 1 <= len(lay.layers_for_slot(s)) <= g


def test_zero_tokens_and_module_reference_switch() -> None:
    lay = SwiftKVLayout(6, 2, 2, num_kv_heads=2, head_dim=8, hidden_size=32)
    proj = SwiftKVProjection(lay)
    cos, sin = rope_cos_sin(torch.arange(0), 8)
    k, v = proj(torch.zeros(0, 32), cos, sin)
    assert k.shape == v.shape == (2, 0, 2, 8)
    cos, sin = rope_cos_sin(torch.arange(5), 8)
    hid = torch.randn(5, 32)
    with torch.no_grad():
        fast = proj(hid, cos, sin)
        proj.use_reference = True
        ref = proj(hid, cos, sin)
    torch.testing.assert_close(fast, ref)


def test_top_level_package_does_not_import_torch() -> None:
    code = "import sys, arctic_inference_core; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- errors ---------------------------------------------------------------------


def _args(**over):
    a = dict(
        hidden=torch.randn(3, 16),
        weight_kv=torch.randn(2 * 2 * 2 * 8, 16),
        num_layers=2,
        num_kv_heads=2,
        head_dim=8,
        cos=torch.ones(3, 8),
        sin=torch.zeros(3, 8),
    )
    a.update(over)
    return a


@pytest.mark.parametrize("fn", [swiftkv_project, reference_project])
@pytest.mark.parametrize(
    "over, match",
    [
        (dict(hidden=torch.randn(1, 3, 16)), r"hidden must be 2-D"),
        (dict(weight_kv=torch.randn(64)), r"weight_kv must be 2-D"),
        (
            dict(weight_kv=torch.randn(63, 16)),
            r"63 rows, expected num_layers \* 2 \* num_kv_heads \* head_dim = 2 \* 2 \* 2 \* 8 = 64",
        ),
        (dict(num_layers=3), r"expected .* = 96"),
        (dict(weight_kv=torch.randn(64, 17)), r"17 columns but hidden size is 16"),
        (dict(cos=torch.ones(4, 8)), r"cos must have shape \[tokens, head_dim\] = \(3, 8\)"),
        (dict(sin=torch.zeros(3, 4)), r"sin must have shape"),
        (dict(head_dim=7, weight_kv=torch.randn(56, 16)), r"head_dim must be even"),
        (dict(num_layers=0), r"num_layers must be >= 1"),
        (dict(num_kv_heads=0), r"num_kv_heads must be >= 1"),
        (dict(bias=torch.zeros(10)), r"bias must have shape \(64,\)"),
        (
            dict(weight_kv=torch.randn(64, 16, dtype=torch.float64)),
            r"weight_kv dtype torch.float64 != hidden dtype",
        ),
        (dict(hidden=torch.ones(3, 16, dtype=torch.int64)), r"floating-point"),
    ],
)
def test_project_errors(fn, over, match) -> None:
    with pytest.raises(ValueError, match=match):
        fn(**_args(**over))


@pytest.mark.parametrize(
    "kw, match",
    [
        (
            dict(num_hidden_layers=8, num_key_value_layers=0),
            r"num_key_value_layers must be in \[1, num_hidden_layers - 1\] = \[1, 7\], got 0",
        ),
        (dict(num_hidden_layers=8, num_key_value_layers=8), r"\[1, 7\], got 8"),
        (dict(num_hidden_layers=1, num_key_value_layers=1), r"num_hidden_layers must be >= 2"),
        (
            dict(num_hidden_layers=8, num_key_value_layers=4, key_value_group_size=0),
            r"key_value_group_size must be >= 1",
        ),
        (
            dict(num_hidden_layers=8, num_key_value_layers=4, key_value_group_size=5),
            r"key_value_group_size \(5\) is larger than the number of later layers \(4",
        ),
        (dict(num_hidden_layers=8, num_key_value_layers=4, head_dim=5), r"head_dim must be even"),
    ],
)
def test_layout_errors(kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        SwiftKVLayout(**kw)


def test_layout_type_and_layer_errors() -> None:
    with pytest.raises(TypeError, match="num_key_value_layers must be an int"):
        SwiftKVLayout(8, 2.0)  # type: ignore[arg-type]
    lay = SwiftKVLayout(8, 3)
    with pytest.raises(ValueError, match="layer 2 is a full layer"):
        lay.slot_for_layer(2)
    with pytest.raises(ValueError, match="layer_idx must be < num_hidden_layers=8, got 8"):
        lay.slot_for_layer(8)
    with pytest.raises(ValueError, match="slot must be < num_kv_slots=5"):
        lay.layers_for_slot(5)
    with pytest.raises(ValueError, match="kv_size needs num_kv_heads and head_dim"):
        _ = lay.weight_rows


def test_stack_errors() -> None:
    k = [torch.zeros(8, 4)] * 2
    with pytest.raises(ValueError, match="k_weights is empty"):
        stack_kv_weights([], [])
    with pytest.raises(ValueError, match="got 2 k weights but 1 v weights"):
        stack_kv_weights(k, k[:1])
    with pytest.raises(ValueError, match=r"v_weights\[1\] has shape \(8, 5\), expected \(8, 4\)"):
        stack_kv_weights(k, [torch.zeros(8, 4), torch.zeros(8, 5)])
    with pytest.raises(ValueError, match="reduce must be 'first' or 'mean'"):
        stack_kv_weights(k, k, reduce="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key_value_group_size must be >= 1"):
        stack_kv_weights(k, k, group_size=0)
    with pytest.raises(ValueError, match=r"weight_kv must have 64 rows"):
        split_kv_weights(torch.zeros(60, 4), 2, 2, 8)
    proj = SwiftKVProjection(SwiftKVLayout(4, 1, 1, num_kv_heads=1, head_dim=8, hidden_size=4))
    with pytest.raises(ValueError, match="expected 3 per-layer weights"):
        proj.load_per_layer(k, k)
    with pytest.raises(ValueError, match="built with bias=False"):
        proj.load_per_layer(k + k[:1], k + k[:1], [torch.zeros(8)] * 3, [torch.zeros(8)] * 3)


def test_gradients_match_reference() -> None:
    g = torch.Generator().manual_seed(0)
    hid = torch.randn(5, 24, generator=g, requires_grad=True)
    w = (torch.randn(3 * 2 * 2 * 8, 24, generator=g) * 0.2).requires_grad_()
    b = torch.randn(3 * 2 * 2 * 8, generator=g).requires_grad_()
    cos, sin = rope_cos_sin(torch.arange(5), 8)
    grads = []
    for fn in (swiftkv_project, reference_project):
        k, v = fn(hid, w, 3, 2, 8, cos, sin, bias=b)
        assert k.is_contiguous() and v.is_contiguous()
        grads.append(torch.autograd.grad((k.square().sum() + (v * 0.5).sum()), (hid, w, b)))
    for a, r in zip(*grads):
        torch.testing.assert_close(a, r)
