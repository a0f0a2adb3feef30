"""The offline engine run of the Ulysses and shift-parallel tests
(test_ulysses_vllm.py, test_shift_parallel.py): both compare against the
same SP=1 reference on the 4-head model (the ``tiny4_sp1`` fixture of
tests/vllm/conftest.py), so one engine start serves both files."""

from __future__ import annotations

import gc
import os

PROMPTS = [
    "def add(a, b):\n    return a + b\n" * 3,
    "abc",
    "x" * 37,
    "The quick brown fox jumps over the lazy dog. " * 2,
]
NEW_TOKENS = 10
INSPECTOR = "arctic_inference_vllm.diagnostics.UlyssesInspector"


def run(model: str, sp: int, tp: int = 1, spec: dict | None = None) -> dict:
    """Greedy tokens and top-3 logprobs of PROMPTS, and what each rank saw."""
    from cpu_engine import cpu_llm
    from vllm import SamplingParams

    kwargs = {"ulysses_sequence_parallel_size": sp} if sp > 1 else {}
    # 24-token steps: prompts prefill over several steps, mixed with decodes
    llm = cpu_llm(
        model,
        sp * tp,
        tensor_parallel_size=tp,
        max_num_batched_tokens=24,
        max_num_seqs=4,
        enable_prefix_caching=False,
        worker_extension_cls=INSPECTOR,
        speculative_config=spec,
        disable_log_stats=False,
        **kwargs,
    )
    try:
        layout = llm.collective_rpc("ulysses_layout")
        llm.collective_rpc("ulysses_record_rows")
        outs = llm.generate(
            PROMPTS,
            SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True, logprobs=3),
            use_tqdm=False,
        )
        return {
            "tokens": [list(o.outputs[0].token_ids) for o in outs],
            "texts": [o.outputs[0].text for o in outs],
            "logprobs": [
                [sorted(v.logprob for v in step.values())[-3:] for step in o.outputs[0].logprobs]
                for o in outs
            ],
            "layout": layout,
            "rows": llm.collective_rpc("ulysses_rows"),
            "accepted": sum(
                m.value
                for m in llm.get_metrics()
                if m.name == "vllm:spec_decode_num_accepted_tokens"
            ),
        }
    finally:
        os.environ.pop("VLLM_CPU_OMP_THREADS_BIND", None)
        del llm
        gc.collect()
