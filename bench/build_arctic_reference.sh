#!/usr/bin/env bash
# Builds Snowflake's arctic-inference 0.3.0 suffix decoding (the reference
# peer, vLLM's own `suffix` proposer imports it) into a directory that
# `bench/vllm_compare.py --methods ... suffix-ai --arctic-path DIR` and
# `bench/suffix_sim.py --arctic-path DIR` import from. Only its suffix-tree
# extension is compiled and only arctic_inference.suffix_decoding is copied:
# no vLLM plugin entry point, nothing installed into the environment, so
# vLLM and torch stay as they are. Needs cmake, ninja, a C++20 compiler and
# nanobind in PYTHON's environment; no network when SDIST is given.
#
#   bash bench/build_arctic_reference.sh OUT_DIR [SDIST.tar.gz]
#   (without SDIST: `pip download arctic-inference==0.3.0 --no-deps --no-binary :all:`)
set -euo pipefail
out=${1:?usage: build_arctic_reference.sh OUT_DIR [arctic_inference-0.3.0.tar.gz]}
python=${PYTHON:-python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ $# -ge 2 ]; then
  sdist=$2
else
  "$python" -m pip download arctic-inference==0.3.0 --no-deps --no-binary :all: -d "$work" >/dev/null
  sdist=$(ls "$work"/arctic_inference-0.3.0.tar.gz)
fi
tar xzf "$sdist" -C "$work"
src="$work/arctic_inference-0.3.0"
cmake -S "$src/csrc/suffix_decoding" -B "$work/build" -G Ninja \
  -DPython_EXECUTABLE="$(command -v "$python")" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work/build" >/dev/null
mkdir -p "$out/arctic_inference/suffix_decoding" "$out/arctic_inference-0.3.0.dist-info"
cp "$src/arctic_inference/__init__.py" "$out/arctic_inference/"
cp "$src"/arctic_inference/suffix_decoding/*.py "$work"/build/_C*.so "$out/arctic_inference/suffix_decoding/"
printf 'Metadata-Version: 2.1\nName: arctic_inference\nVersion: 0.3.0\n' \
  > "$out/arctic_inference-0.3.0.dist-info/METADATA"
PYTHONPATH="$out" "$python" -c \
  "from arctic_inference.suffix_decoding import SuffixDecodingCache; print('arctic-inference 0.3.0 suffix decoding in $out')"
