"""``python -m arctic_inference_vllm.patches [--markdown]``: the patch
manifest, as the table of docs/vllm.md or one line per patch."""

from __future__ import annotations

import argparse

from arctic_inference_vllm.patches import PATCHES, markdown_table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m arctic_inference_vllm.patches")
    parser.add_argument("--markdown", action="store_true", help="the table of docs/vllm.md")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown_table(), end="")
        return
    for p in PATCHES:
        print(f"{p.name:<18} {p.phase.value:<18} {', '.join(p.targets)}")


if __name__ == "__main__":
    main()
