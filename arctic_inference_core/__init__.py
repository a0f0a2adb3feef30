"""arctic_inference_core: dependency-light building blocks for fast LLM inference.

Stable, versioned interfaces that any engine can import (vLLM support lives in
the separate ``arctic_inference_vllm`` package). Parts:

- :mod:`arctic_inference_core.suffix`: suffix decoding (C++ suffix trees).
- :mod:`arctic_inference_core.traces`: the JSON-lines prompt trace reader.
- :mod:`arctic_inference_core.speculator`, :mod:`arctic_inference_core.swiftkv`,
  :mod:`arctic_inference_core.ulysses`: the torch parts (experimental).

:class:`CommandError` is the error of the commands
(``python -m arctic_inference_core.speculator.train``, ``...swiftkv.convert``,
``...swiftkv.distill``).

See docs/compatibility.md for what "frozen interface" means.
"""

from arctic_inference_core._command import CommandError
from arctic_inference_core._version import __version__

__all__ = ["CommandError", "__version__"]
