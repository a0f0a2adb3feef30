"""Synthetic agentic coding request traces (built-in fallback data set).

What it is
----------
The suffix decoding benchmarks (``bench/suffix_sim.py``) replay recorded
agentic coding requests: JSON lines with ``id``, ``family``, ``prompt`` and
``response``. The real trace file (``../shared/bench-data/agentic-requests.jsonl``)
exists only in one workplace; this script generates a deterministic, stdlib-only
stand-in in the same format so the benchmark runs anywhere.

Each Python standard library package (``json/``, ``email/``, ``asyncio/``,
...) plays the part of a repository with a commit history. A commit applies
1-3 mechanical edits to one file and is emitted as two requests, like the real
data: an ``edit_file`` request (reply: the whole updated file) immediately
followed by the ``edit_diff`` request of the same change (reply: a git-style
unified diff, ``@@`` hunk headers with function context and no ``---``/``+++``
lines). Later commits to a file start from its already-edited version, so
requests repeat each other the way a real repository history does. About 4% of
the requests are ``new_file`` requests ("Write the new file <path>.", with the
directory listing in the prompt); their reply is a real stdlib module not used
elsewhere in the trace. The family mix (about 48/48/4), prompt templates and
instruction lines copy the real file.

Edits: rename a parameter or local variable within one function, insert a guard
clause / assertion / docstring / comment, add a keyword argument with a default
(and a use of it), delete a statement or comment block, change an integer
constant or reword a message string. Long files are cut to a window of whole
top-level statements (the same window in prompt and reply, for the whole
history of that file).

Limits
------
The edits are synthetic, not model outputs nor real commits: they are
mechanical, the task lines are templated, code semantics are not preserved
(only syntax is checked), and the repetition statistics (what a suffix tree
can exploit) only roughly resemble real agent traffic. The output is
deterministic for a given ``(n, seed)`` and Python version; another Python
version ships other stdlib sources and gives other traces. Use the real trace
file for published numbers.

Usage::

    python bench/make_traces.py --out bench/results/synthetic-requests.jsonl --n 120 --seed 0

The generator lives in ``bench/benchlib/synthetic.py``: ``from benchlib.synthetic
import generate`` (``bench/`` on ``sys.path``); ``generate(n, seed)`` returns
the list of request dicts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchlib.synthetic import generate, summary, write_jsonl


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output JSON lines file")
    ap.add_argument("--n", type=int, default=120, help="number of requests (default 120)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = ap.parse_args(argv)
    rows = generate(args.n, args.seed)
    write_jsonl(rows, args.out)
    print(f"{args.out}: {summary(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
