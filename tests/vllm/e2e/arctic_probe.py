"""Worker extension for tests/vllm/e2e/test_arctic_method.py (loaded by vLLM in
the worker process through ``worker_extension_cls``).

It checks, on every speculator call, that the hidden states handed to the
speculator are the right ones: under greedy sampling, the target model's
logits at the hidden state that produced a request's last token have that
token as their argmax. A wrong row (another position, another request) breaks
this, while draft acceptance alone would hardly notice.
"""

from __future__ import annotations

from typing import Any

import arctic_inference_core.speculator as speculator_api
from arctic_inference_vllm.diagnostics import SuffixCacheInspector


class ArcticProbe(SuffixCacheInspector):
    def arctic_probe_start(self) -> None:
        model = self.model_runner.model  # type: ignore[attr-defined]
        stats = {"calls": 0, "rows": 0, "mismatches": 0}
        self._arctic_probe = stats
        original = speculator_api.GraphDrafter.__call__

        def checked_call(drafter: Any, hidden: Any, last: Any, num_tokens: Any = None) -> Any:
            predicted = model.compute_logits(hidden).argmax(dim=-1)
            stats["calls"] += 1
            stats["rows"] += int(hidden.shape[0])
            stats["mismatches"] += int((predicted != last).sum())
            return original(drafter, hidden, last, num_tokens)

        # ArcticProposer drafts through its GraphDrafter.
        speculator_api.GraphDrafter.__call__ = checked_call  # type: ignore[method-assign]

    def arctic_probe_stats(self) -> dict[str, int]:
        return dict(self._arctic_probe)

    def draft_policy_state(self) -> dict[str, Any]:
        """What the proposer's draft policy learned and chose."""
        return self.model_runner.drafter.policy.snapshot()  # type: ignore[attr-defined, no-any-return]
