"""The shipped benchmark assets (bench/assets) and their loader
(bench/benchlib/assets.py): the int8 format, materializing a loadable
Hugging Face directory once, the prompt set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchlib import assets

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_int8_asset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(original, int8 asset) of a tiny random Llama."""
    pytest.importorskip("transformers")
    from arctic_inference_vllm.testing import build_tiny_llama

    root = tmp_path_factory.mktemp("asset")
    original = build_tiny_llama(root / "tiny")
    info = assets.write_int8_asset(original, root / "tiny-int8")
    assert info["matrices"] == 2 * 7 + 2  # 7 per layer, embedding, LM head (not tied)
    return original, root / "tiny-int8"


def test_quantize_rows_is_within_half_a_step() -> None:
    w = torch.randn(64, 48) * torch.logspace(-3, 1, 64)[:, None]
    w[5] = 0.0
    q, scale = assets.quantize_rows(w)
    assert q.dtype == torch.int8 and scale.dtype == torch.float16 and scale.shape == (64,)
    assert int(q.abs().max()) <= 127 and bool((q[5] == 0).all())
    back = assets.dequantize_state({"w": q, "w.scale": scale}, "float32")["w"]
    assert bool(((back - w).abs() <= scale.float()[:, None] * 0.5 + 1e-6).all())


def test_materialized_model_loads_and_matches_the_original(
    tiny_int8_asset: tuple[Path, Path], tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    original, asset = tiny_int8_asset
    out = assets.bench_model_dir("float32", asset=asset, cache=tmp_path)
    assert out == tmp_path / "tiny-float32"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["dtype"] == cfg["torch_dtype"] == "float32" and "quantization" not in cfg
    assert (out / "tokenizer.json").is_file()
    a = AutoModelForCausalLM.from_pretrained(original).eval()
    b = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([[0, 17, 40, 99, 3, 250, 18]])
    with torch.no_grad():
        la, lb = a(ids).logits, b(ids).logits
    # the tiny model's LM head is scaled up (logits in the hundreds): compare relative to it
    assert float((la - lb).abs().max()) < 0.05 * float(la.abs().max())
    assert bool((la.argmax(-1) == lb.argmax(-1)).float().mean() >= 0.8)


def test_materialized_once_and_again_when_the_asset_changes(
    tiny_int8_asset: tuple[Path, Path], tmp_path: Path
) -> None:
    _, shipped = tiny_int8_asset
    asset = tmp_path / "tiny-int8"
    asset.mkdir()
    for f in shipped.iterdir():
        (asset / f.name).write_bytes(f.read_bytes())
    cache = tmp_path / "cache"
    out = assets.bench_model_dir("bfloat16", asset=asset, cache=cache)
    weights = out / "model.safetensors"
    first = weights.stat().st_mtime_ns
    assert assets.bench_model_dir("bfloat16", asset=asset, cache=cache) == out
    assert weights.stat().st_mtime_ns == first  # reused
    (asset / "README.md").write_text("notes do not count\n")
    assert assets.bench_model_dir("bfloat16", asset=asset, cache=cache) == out
    assert weights.stat().st_mtime_ns == first
    cfg = json.loads((asset / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-5
    (asset / "config.json").write_text(json.dumps(cfg))
    assets.bench_model_dir("bfloat16", asset=asset, cache=cache)
    assert json.loads((out / "config.json").read_text())["rms_norm_eps"] == 1e-5
    assert sorted(p.name for p in cache.iterdir()) == ["tiny-bfloat16"]  # no temporaries left


def test_unknown_dtype_is_refused(tiny_int8_asset: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dtype 'int4' is not one of float32, bfloat16, float16"):
        assets.bench_model_dir("int4", asset=tiny_int8_asset[1], cache=tmp_path)


def test_shipped_model_is_int8_with_a_scale_per_row() -> None:
    from safetensors import safe_open

    asset = assets.BENCH_LM_INT8
    cfg = json.loads((asset / "config.json").read_text())
    assert cfg["quantization"]["format"] == assets.FORMAT
    with safe_open(str(asset / assets.WEIGHTS), "pt") as f:
        names = set(f.keys())
        for name in names - {n for n in names if n.endswith(assets.SCALE_SUFFIX)}:
            shape, dtype = f.get_slice(name).get_shape(), f.get_slice(name).get_dtype()
            if len(shape) == 2:
                scale = f.get_slice(name + assets.SCALE_SUFFIX)
                assert (dtype, scale.get_dtype(), scale.get_shape()) == ("I8", "F16", shape[:1])
            else:
                assert dtype == "F32"
    assert "model.embed_tokens.weight" in names and cfg["tie_word_embeddings"]
    assert (asset / assets.WEIGHTS).stat().st_size < 29e6


def test_shipped_prompts_mix_the_three_families() -> None:
    path = assets.agentic_prompts_path()
    rows = [json.loads(line) for line in path.open()]
    families = [r["family"] for r in rows]
    assert path.stat().st_size < 400_000 and len(rows) == 47
    assert {f: families.count(f) for f in set(families)} == {
        "edit_file": 23,
        "edit_diff": 23,
        "new_file": 1,
    }
    assert all(r["id"].startswith("requests-") and r["prompt"] and r["response"] for r in rows)
