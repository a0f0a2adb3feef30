"""cpu_dtype: bf16 only where the CPU has native bf16 arithmetic."""

from __future__ import annotations

import pytest

from arctic_inference_vllm.testing import CPU_DTYPE_ENV, cpu_dtype

X86_AVX2 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz
flags\t\t: fpu vme de pse sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2
bugs\t\t: spectre_v1

processor\t: 1
flags\t\t: fpu vme de pse sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2
"""
X86_AVX512_NO_BF16 = "flags\t\t: sse avx2 avx512f avx512bw avx512_vnni avx_vnni\n"
X86_AVX512_BF16 = "flags\t\t: sse avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"
X86_AMX = "flags\t\t: sse avx2 avx512f amx_bf16 amx_tile amx_int8\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 bf16 i8mm\n"
ARM_NO_BF16 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"


@pytest.fixture(autouse=True)
def _no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CPU_DTYPE_ENV, raising=False)


@pytest.mark.parametrize(
    ("cpuinfo", "dtype"),
    [
        (X86_AVX2, "float32"),
        (X86_AVX512_NO_BF16, "float32"),
        (X86_AVX512_BF16, "bfloat16"),
        (X86_AMX, "bfloat16"),
        (ARM_BF16, "bfloat16"),
        (ARM_NO_BF16, "float32"),
        ("", "float32"),
        # the feature name only counts in its own field
        ("model name\t: avx512_bf16 bf16\nflags\t\t: avx2\n", "float32"),
        ("flags\t\t: avx2 bf16\n", "float32"),  # x86 has no plain bf16 flag
    ],
)
def test_native_bf16_is_detected_from_cpuinfo(cpuinfo: str, dtype: str) -> None:
    assert cpu_dtype(cpuinfo) == dtype


def test_the_environment_overrides_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CPU_DTYPE_ENV, "float32")
    assert cpu_dtype(X86_AVX512_BF16) == "float32"
    monkeypatch.setenv(CPU_DTYPE_ENV, "bfloat16")
    assert cpu_dtype(X86_AVX2) == "bfloat16"
    monkeypatch.setenv(CPU_DTYPE_ENV, "half")
    with pytest.raises(ValueError, match="ARCTIC_INFERENCE_CPU_DTYPE='half' is not one of"):
        cpu_dtype(X86_AVX2)


def test_this_machine_gets_an_answer() -> None:
    assert cpu_dtype() in ("float32", "bfloat16")
