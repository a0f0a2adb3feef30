"""The vLLM SwiftKV model built in this process (real vLLM layers, one Gloo
rank, no engine): every linear layer receives vLLM's quant_config, the
packed ``kv_proj_swiftkv`` reaches the quantization config; loading a
released-layout checkpoint reads every parameter and skips the later layers'
original q/k/v; a SwiftKV tensor outside the layout, or a module left
without tensors, is an error naming it."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

sys.path.insert(0, str(Path(__file__).parents[2] / "core" / "swiftkv"))
from swiftkv_reference import write_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def build(extras_switch, tmp_path_factory):
    """``build(quant_config=None, swiftkv=True)``: the model of a group-2
    checkpoint (6 layers, 2 with their own K/V), and the checkpoint's tensors."""
    from safetensors.torch import load_file
    from vllm.config import set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel
    from vllm.distributed.parallel_state import (
        destroy_distributed_environment,
        destroy_model_parallel,
    )
    from vllm.engine.arg_utils import EngineArgs

    import arctic_inference_vllm.plugin as plugin
    from arctic_inference_vllm.swiftkv.llama import LlamaSwiftKVForCausalLM

    root = tmp_path_factory.mktemp("swiftkv-layers")
    paths = {on: write_checkpoint(root / str(on), 2, 2, swiftkv=on) for on in (True, False)}
    with extras_switch():
        plugin.install_extras()
        configs = {
            on: EngineArgs(model=str(p), max_model_len=512, dtype="float32").create_engine_config()
            for on, p in paths.items()
        }
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with set_current_vllm_config(configs[True]):
        init_distributed_environment(1, 0, f"tcp://127.0.0.1:{port}", 0, backend="gloo")
        initialize_model_parallel(1, 1)

    def make(quant_config=None, swiftkv: bool = True):
        cfg = configs[swiftkv]
        cfg.compilation_config.static_forward_context.clear()  # attention layer names
        cfg.quant_config = quant_config
        with set_current_vllm_config(cfg):
            model = LlamaSwiftKVForCausalLM(vllm_config=cfg, prefix="")
        return model, load_file(str(paths[swiftkv] / "model.safetensors"))

    try:
        yield make
    finally:
        destroy_model_parallel()
        destroy_distributed_environment()


def _recorder():
    from vllm.model_executor.layers.linear import LinearBase, UnquantizedLinearMethod
    from vllm.model_executor.layers.quantization.base_config import QuantizationConfig

    class Recorder(QuantizationConfig):
        """Unquantized, but records which layers asked for a method."""

        def __init__(self) -> None:
            super().__init__()
            self.asked: dict[str, str] = {}

        def get_name(self):
            return "recorder"

        def get_supported_act_dtypes(self):
            return [torch.float32]

        @classmethod
        def get_min_capability(cls):
            return 0

        @staticmethod
        def get_config_filenames():
            return []

        @classmethod
        def from_config(cls, config):
            return cls()

        def get_quant_method(self, layer, prefix):
            self.asked[prefix] = type(layer).__name__
            return UnquantizedLinearMethod() if isinstance(layer, LinearBase) else None

    return Recorder()


def test_every_linear_layer_gets_the_quant_config(build) -> None:
    from vllm.model_executor.layers.linear import LinearBase

    quant = _recorder()
    model, _ = build(quant)
    linear = {name for name, m in model.named_modules() if isinstance(m, LinearBase)}
    assert {n for n in quant.asked if quant.asked[n].endswith("Linear")} == linear
    # the SwiftKV layers among them: queries on layers 2-5, K/V on 2 and 4
    assert {f"model.layers.{i}.self_attn.q_proj_swiftkv" for i in range(2, 6)} <= linear
    assert {n for n in linear if "kv_proj_swiftkv" in n} == {
        "model.layers.2.self_attn.kv_proj_swiftkv",
        "model.layers.4.self_attn.kv_proj_swiftkv",
    }
    # no original q/k/v in the later layers
    assert not any(f"layers.{i}.self_attn.qkv_proj" in n for n in linear for i in range(2, 6))
    # the checkpoint names of the packed K/V (for formats that quantize by name)
    assert quant.packed_modules_mapping["kv_proj_swiftkv"] == ["k_proj_swiftkv", "v_proj_swiftkv"]
    # the attention layers (writers, KV-sharing readers) get it too (KV-cache scales)
    assert "model.swiftkv_cache.6.attn" in quant.asked
    assert "model.layers.5.self_attn.attn" in quant.asked


@pytest.mark.parametrize("swiftkv", [True, False], ids=["swiftkv", "llama"])
def test_loading_reads_every_parameter(build, swiftkv: bool) -> None:
    model, tensors = build(swiftkv=swiftkv)
    loaded = model.load_weights(iter(tensors.items()))
    assert loaded == {name for name, _ in model.named_parameters()}
    if swiftkv:
        w = model.model.layers[2].self_attn.kv_proj_swiftkv.weight
        torch.testing.assert_close(
            w[:64], tensors["model.layers.2.self_attn.k_proj_swiftkv.weight"]
        )
        torch.testing.assert_close(
            w[64:], tensors["model.layers.2.self_attn.v_proj_swiftkv.weight"]
        )


@pytest.mark.parametrize("swiftkv", [True, False], ids=["swiftkv", "llama"])
def test_bad_checkpoints_are_named(build, swiftkv: bool) -> None:
    model, tensors = build(swiftkv=swiftkv)
    extra = dict(tensors)
    extra["model.layers.3.self_attn.k_proj_swiftkv.weight"] = torch.zeros(64, 128)
    with pytest.raises(
        ValueError, match=r"unexpected weight 'model\.layers\.3\.self_attn\.k_proj_swiftkv\.weight'"
    ):
        model.load_weights(iter(extra.items()))
    drop = (
        "model.layers.4.self_attn.k_proj_swiftkv.weight"
        if swiftkv
        else "model.layers.4.self_attn.k_proj.weight"
    )
    model, tensors = build(swiftkv=swiftkv)
    missing = {k: v for k, v in tensors.items() if k != drop}
    with pytest.raises(ValueError, match=rf"no weights for {drop.removesuffix('.weight')}\.\*"):
        model.load_weights(iter(missing.items()))
