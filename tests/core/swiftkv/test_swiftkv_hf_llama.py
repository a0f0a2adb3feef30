"""The core's Hugging Face SwiftKV model reads and writes the released layout
(ArcticTraining's LlamaSwiftKV): logits equal a plain-PyTorch reading of a
released-layout checkpoint (swiftkv_reference.py) for AcrossKV groups of 1
and 2, with SwiftKV on and off; off is the plain Llama; the prefill shortcut
equals the full forward; missing or unexpected weights are errors naming
them; from_llama writes exactly the released names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from safetensors.torch import load_file, save_file  # noqa: E402
from swiftkv_reference import (  # noqa: E402
    TINY,
    reference_logits,
    released_names,
    write_checkpoint,
)
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM  # noqa: E402

from arctic_inference_core.swiftkv import register_hf_model  # noqa: E402
from arctic_inference_core.swiftkv.hf_llama import (  # noqa: E402
    LlamaSwiftKVConfig,
    LlamaSwiftKVForCausalLM,
)

register_hf_model()
IDS = [0, 5, 9, 33, 100, 7, 8, 200, 41, 3]


def _load(path: Path) -> LlamaSwiftKVForCausalLM:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    assert isinstance(model, LlamaSwiftKVForCausalLM)
    return model


def _logits(model, ids=IDS, keep: int = 0) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids]), logits_to_keep=keep).logits[0].double()


@pytest.fixture(scope="module", params=[1, 2], ids=["group1", "group2"])
def released(request, tmp_path_factory) -> Path:
    """6 layers, 2 with their own K/V; groups of 1 (4 K/V projections) or 2 (2)."""
    return write_checkpoint(tmp_path_factory.mktemp("released"), 2, request.param)


def test_loads_and_matches_the_reference(released: Path) -> None:
    cfg = AutoConfig.from_pretrained(released)
    assert isinstance(cfg, LlamaSwiftKVConfig) and cfg.swiftkv is True
    model = _load(released)
    ref = reference_logits(released, IDS)
    torch.testing.assert_close(_logits(model), ref, atol=1e-4, rtol=1e-4)
    # the prefill shortcut: later layers for the last tokens only
    for keep in (1, 3):
        torch.testing.assert_close(_logits(model, keep=keep), ref[-keep:], atol=1e-4, rtol=1e-4)
    # switched off: the original model, every layer with its own projections
    model.swiftkv(False)
    off = reference_logits(released, IDS, swiftkv=False)
    torch.testing.assert_close(_logits(model), off, atol=1e-4, rtol=1e-4)
    assert (off - ref).abs().max() > 1.0  # the two paths differ on this checkpoint


def test_later_layers_original_qkv_are_not_used(released: Path, tmp_path: Path) -> None:
    """Scaling a later layer's original q/k/v changes nothing with SwiftKV on,
    everything with it off."""
    tensors = load_file(str(released / "model.safetensors"))
    for m in "qkv":
        tensors[f"model.layers.3.self_attn.{m}_proj.weight"] *= 3.0
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / f).write_bytes((released / f).read_bytes())
    save_file(tensors, str(tmp_path / "model.safetensors"))
    base, changed = _load(released), _load(tmp_path)
    torch.testing.assert_close(_logits(changed), _logits(base))
    assert not torch.allclose(_logits(changed.swiftkv(False)), _logits(base.swiftkv(False)))


def test_swiftkv_false_is_the_plain_llama(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "skv", 2, 2, swiftkv=False)
    llama_dir = tmp_path / "llama"
    llama_dir.mkdir()
    tensors = load_file(str(ckpt / "model.safetensors"))
    save_file(
        {k: v for k, v in tensors.items() if "swiftkv" not in k},
        str(llama_dir / "model.safetensors"),
    )
    LlamaConfig(**TINY, tie_word_embeddings=False).save_pretrained(llama_dir)
    llama = LlamaForCausalLM.from_pretrained(llama_dir, dtype=torch.float32).eval()
    model = _load(ckpt)
    assert model.config.swiftkv is False
    torch.testing.assert_close(_logits(model), _logits(llama), atol=1e-5, rtol=1e-5)


def _tamper(src: Path, dst: Path, drop: str | None = None, add: str | None = None) -> Path:
    tensors = load_file(str(src / "model.safetensors"))
    if drop:
        del tensors[drop]
    if add:
        tensors[add] = torch.zeros(64, 128)
    dst.mkdir()
    (dst / "config.json").write_bytes((src / "config.json").read_bytes())
    save_file(tensors, str(dst / "model.safetensors"))
    return dst


def test_missing_or_unexpected_weights_are_named(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "g2", 2, 2)  # K/V projections on layers 2 and 4
    missing = _tamper(ckpt, tmp_path / "m", drop="model.layers.4.self_attn.k_proj_swiftkv.weight")
    with pytest.raises(
        ValueError,
        match=r"missing weights \['model\.layers\.4\.self_attn\.k_proj_swiftkv\.weight'\]",
    ):
        AutoModelForCausalLM.from_pretrained(missing)
    extra = _tamper(ckpt, tmp_path / "u", add="model.layers.3.self_attn.k_proj_swiftkv.weight")
    with pytest.raises(
        ValueError,
        match=r"unexpected weights \['model\.layers\.3\.self_attn\.k_proj_swiftkv\.weight'\]",
    ):
        AutoModelForCausalLM.from_pretrained(extra)


def _llama(layers: int = 4, bias: bool = False) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        attention_bias=bias,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg).eval()


def test_from_llama_writes_the_released_layout(tmp_path: Path) -> None:
    model = LlamaSwiftKVForCausalLM.from_llama(_llama(layers=6), 2, 2, reduce="mean")
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "llama_swiftkv"
    assert cfg["architectures"] == ["LlamaSwiftKVForCausalLM"]
    assert (cfg["swiftkv"], cfg["num_key_value_layers"], cfg["key_value_group_size"]) == (
        True,
        2,
        2,
    )
    assert cfg["tie_word_embeddings"] is False
    assert set(load_file(str(tmp_path / "model.safetensors"))) == set(released_names(cfg))


@pytest.mark.parametrize("bias", [False, True])
def test_from_llama_is_the_llama_where_it_must_be(bias: bool) -> None:
    """One later layer, group 1: its K/V input is its own input_layernorm(x)
    (norm_swiftkv := that norm), so SwiftKV == Llama exactly. Off: the Llama
    for any split."""
    llama = _llama(bias=bias)
    ids = torch.randint(0, 64, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = llama(ids).logits
        one = LlamaSwiftKVForCausalLM.from_llama(llama, num_key_value_layers=3).eval()
        torch.testing.assert_close(one(ids).logits, ref, atol=1e-5, rtol=1e-5)
        half = LlamaSwiftKVForCausalLM.from_llama(llama, 2, 2).eval()
        assert not torch.allclose(half(ids).logits, ref, atol=1e-3)
        torch.testing.assert_close(half.swiftkv(False)(ids).logits, ref, atol=1e-5, rtol=1e-5)


def test_config_errors() -> None:
    base = dict(num_hidden_layers=4, hidden_size=32, num_attention_heads=4)
    with pytest.raises(ValueError, match=r"num_key_value_layers must be"):
        LlamaSwiftKVConfig(**base, num_key_value_layers=5)
    with pytest.raises(
        ValueError, match=r"key_value_group_size \(3\) must divide the number of later layers \(2"
    ):
        LlamaSwiftKVConfig(**base, num_key_value_layers=2, key_value_group_size=3)
    with pytest.raises(
        ValueError, match=r"num_key_value_layers must be in \[1, num_hidden_layers - 1\]"
    ):
        LlamaSwiftKVConfig(**base, swiftkv=True)  # unset: all 4 layers keep K/V, none later
    cfg = LlamaSwiftKVConfig(**base)  # ArcticTraining's defaults: the original model
    assert (cfg.swiftkv, cfg.num_key_value_layers, cfg.key_value_group_size) == (False, 4, 1)
