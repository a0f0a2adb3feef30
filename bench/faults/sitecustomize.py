"""Faults to inject into a served engine, to watch bench/serve_load.py's
checks fail. Python imports this file at start-up in every process whose
PYTHONPATH holds this directory (vLLM's engine processes inherit it):

    ARCTIC_FAULT=unreleased PYTHONPATH=bench/faults python bench/serve_load.py \\
        --requests 100 --concurrency 16 --methods suffix --model DIR --max-model-len 512

``unreleased``: the suffix cache never releases a request (``stop_request``
does nothing), so the check ``cache_released`` must fail.
"""

import os

if os.environ.get("ARCTIC_FAULT") == "unreleased":
    from arctic_inference_core.suffix import SuffixDecodingCache

    SuffixDecodingCache.stop_request = lambda self, req_id: None  # type: ignore[method-assign]
