"""Reference SwiftKV Llama (transformers): exactness vs Llama in the degenerate
setting, prefill shortcut == full forward, Auto* registration, save/load."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM  # noqa: E402

from arctic_inference_core.swiftkv.hf_llama import SwiftKVLlamaConfig, SwiftKVLlamaForCausalLM  # noqa: E402


def _llama(layers: int = 4, bias: bool = False, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,  # GQA ratio 2
        max_position_embeddings=64,
        attention_bias=bias,
        attn_implementation="eager",
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("bias", [False, True])
def test_one_later_layer_is_exactly_llama(bias: bool) -> None:
    """num_key_value_layers = N - 1: the only later layer's K/V input is its own
    input_layernorm(x) (norm_swiftkv := that norm), so SwiftKV == Llama exactly."""
    llama = _llama(bias=bias)
    model = SwiftKVLlamaForCausalLM.from_llama(llama, num_key_value_layers=3).eval()
    ids = torch.randint(0, 64, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = llama(ids).logits
        full = model(ids).logits
        last = model(ids, logits_to_keep=1).logits
    torch.testing.assert_close(full, ref, atol=1e-5, rtol=1e-5)
    assert last.shape == (2, 1, 64)
    torch.testing.assert_close(last[:, -1], ref[:, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kvl, group", [(1, 1), (2, 1), (1, 2), (1, 3), (2, 2)])
def test_prefill_shortcut_matches_full_forward(kvl: int, group: int) -> None:
    """Later layers run only for the last k tokens == all tokens through all layers."""
    model = SwiftKVLlamaForCausalLM.from_llama(_llama(layers=5), kvl, group, reduce="mean").eval()
    ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids).logits
        for k in (1, 4):
            torch.testing.assert_close(
                model(ids, logits_to_keep=k).logits, full[:, -k:], atol=1e-5, rtol=1e-5
            )
        model.model.swiftkv_proj.use_reference = True
        torch.testing.assert_close(model(ids).logits, full, atol=1e-5, rtol=1e-5)


def test_auto_registration_and_save_load(tmp_path) -> None:
    model = SwiftKVLlamaForCausalLM.from_llama(_llama(), 2, 2).eval()
    model.save_pretrained(tmp_path)
    cfg = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(cfg, SwiftKVLlamaConfig) and cfg.model_type == "swiftkv_llama"
    assert (cfg.num_key_value_layers, cfg.key_value_group_size) == (2, 2)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, SwiftKVLlamaForCausalLM)
    ids = torch.randint(0, 64, (1, 7))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    names = dict(loaded.named_parameters())
    assert names["model.swiftkv_proj.weight"].shape == (1 * 2 * 2 * 8, 32)
    assert "model.layers.2.self_attn.k_proj.weight" not in names


def test_config_errors() -> None:
    with pytest.raises(
        ValueError,
        match=r"num_key_value_layers must be in \[1, num_hidden_layers - 1\] = \[1, 3\], got 4",
    ):
        SwiftKVLlamaConfig(
            num_hidden_layers=4, hidden_size=32, num_attention_heads=4, num_key_value_layers=4
        )
    with pytest.raises(ValueError, match=r"key_value_group_size \(3\) is larger"):
        SwiftKVLlamaConfig(
            num_hidden_layers=4,
            hidden_size=32,
            num_attention_heads=4,
            num_key_value_layers=2,
            key_value_group_size=3,
        )
