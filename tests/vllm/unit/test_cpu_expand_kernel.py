"""patches/cpu_expand_kernel.py: vLLM's CPU stand-in for the rejection
sampler's expand kernel writes its output (any dtype), as the Triton kernel
does; vLLM's own leaves a float or int32 output unwritten (the bug the patch
works around: when this test's first case fails, vLLM has fixed it and the
patch can go)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.vllm

torch = pytest.importorskip("torch")


def reference(values: list, counts: list[int], replace_from, replace_to) -> list:
    out = []
    for v, c in zip(values, counts):
        out += [replace_to if v == replace_from else v] * c
    return out


def test_vllms_own_cpu_expand_leaves_non_int64_outputs_unwritten() -> None:
    pytest.importorskip("vllm._C")
    from vllm.utils import cpu_triton_utils

    from arctic_inference_vllm.patches import _wrap

    kernel = cpu_triton_utils._expand_kernel_impl
    original = getattr(kernel, _wrap.ORIGINAL, kernel)
    out = torch.full((6,), 123.0)
    original(out, torch.tensor([0.0, 0.8, 0.0]), torch.tensor([2, 5, 6]), 0, 1)
    assert out.tolist() == [123.0] * 6


@pytest.mark.parametrize("dtype", [torch.float32, torch.int32, torch.int64])
def test_patched_expand_fills_the_output(dtype) -> None:
    from vllm.utils import cpu_triton_utils

    from arctic_inference_vllm.patches import cpu_expand_kernel

    cpu_expand_kernel.apply()
    cpu_expand_kernel.apply()  # idempotent
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        n = int(torch.randint(0, 6, (1,), generator=g))
        values = torch.randint(0, 3, (n,), generator=g).to(dtype)
        counts = torch.randint(0, 4, (n,), generator=g)
        cu = torch.cumsum(counts, 0)
        total = int(cu[-1]) if n else 0
        out = torch.full((total,), -7, dtype=dtype)
        cpu_triton_utils._expand_kernel_impl(out, values, cu, 0, 5)
        assert out.tolist() == reference(values.tolist(), counts.tolist(), 0, 5)


def test_expand_batch_to_tokens_gives_real_temperatures() -> None:
    pytest.importorskip("vllm._C")
    from vllm.platforms import current_platform
    from vllm.v1.sample.rejection_sampler import expand_batch_to_tokens

    from arctic_inference_vllm.patches import cpu_expand_kernel

    # As in a CPU worker: plugins (the patch) first, then the platform's
    # kernel replacements.
    cpu_expand_kernel.apply()
    current_platform.register_triton_kernel_overrides()
    temps = torch.tensor([0.0, 0.8, 0.0])
    got = expand_batch_to_tokens(temps, torch.tensor([2, 5, 6]), 6, replace_from=0, replace_to=1)
    assert got.tolist() == pytest.approx([1.0, 1.0, 0.8, 0.8, 0.8, 1.0])
