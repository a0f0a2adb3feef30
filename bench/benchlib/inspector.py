"""A vLLM worker extension for the benchmarks (``worker_extension_cls``): the
draft policy's state, read with ``llm.collective_rpc("draft_policy_state")``.
vLLM loads it by name in its worker processes, which inherit ``sys.path``
(``bench/`` first)."""

from __future__ import annotations

from typing import Any


class PolicyInspector:
    def draft_policy_state(self) -> dict[str, Any] | None:
        """The proposer's draft policy snapshot (learned step costs, choices);
        None when the proposer has no policy."""
        runner = getattr(self, "model_runner", None)
        policy = getattr(getattr(runner, "drafter", None), "policy", None)
        return None if policy is None else policy.snapshot()
