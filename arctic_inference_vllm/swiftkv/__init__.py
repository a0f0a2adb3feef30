"""SwiftKV checkpoints in vLLM (extras switch on; docs/swiftkv.md): the model
(``llama``), its registration with vLLM's ModelRegistry (``registry``) and
the engine-config changes its config hook makes (``config``, installed by
patches/swiftkv_config.py)."""
