"""Prompts whose greedy tokens without speculation the speculative e2e
tests compare against (test_suffix_e2e.py, test_arctic_method.py). The
``plain_greedy`` fixture of tests/vllm/conftest.py runs all of them on one
engine (each start costs ~20 s on 2 cores)."""

from __future__ import annotations

MAX_TOKENS = 64

SUFFIX_PROMPTS = [
    "abcabcabcabcabcabcabc",  # repetitive: drafts accepted
    "def add(a, b):\n    return a + b\n\ndef add(a, b):\n",
    "The quick brown fox jumps over the lazy dog.",  # not repetitive
    "Zq8#mP2$vL!",
    "x",
]

ARCTIC_PROMPTS = [
    "alpha item 7: ",  # like the arctic tests' training prompts
    "beta item 9: ",
    "abcabcabcabcabcabcabc",  # repetitive: suffix drafts
    "def add(a, b):\n    return a + b\n\ndef add(a, b):\n",
    "The quick brown fox jumps over the lazy dog.",
]
