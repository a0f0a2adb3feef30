"""The ``arctic`` speculative method (extras switch on; docs/speculator.md):
its settings and start-up checks (``config``, used by the front-end hook
patches/speculator_config.py), the drafter vLLM builds as its
``custom_class`` proposer (``proposer``), the step inputs the runner hook
patches/speculator_runner.py hands it (``step``) and its cost-aware choice
between suffix and speculator drafts (``drafting``)."""
