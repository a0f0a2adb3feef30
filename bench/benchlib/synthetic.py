"""Synthetic agentic coding request traces (built-in fallback data set).

The suffix decoding benchmarks replay recorded agentic coding requests: JSON
lines with ``id``, ``family``, ``prompt`` and ``response``. The real trace
file (``../shared/bench-data/agentic-requests.jsonl``) exists only in some
workplaces; :func:`generate` makes a deterministic, stdlib-only stand-in in
the same format so the benchmarks run anywhere. ``bench/make_traces.py`` is
its command; its docstring says how the requests are made and what they do
not show.

Each Python standard library package (``json/``, ``email/``, ``asyncio/``,
...) plays the part of a repository with a commit history. A commit applies
1-3 mechanical edits to one file and is emitted as two requests, like the real
data: an ``edit_file`` request (reply: the whole updated file) immediately
followed by the ``edit_diff`` request of the same change (reply: a git-style
unified diff). About 4% of the requests are ``new_file`` requests. The output
is deterministic for a given ``(n, seed)`` and Python version.
"""

from __future__ import annotations

import ast
import builtins
import difflib
import hashlib
import json
import keyword
import math
import random
import sysconfig
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

EDIT_FILE = "edit_file"
EDIT_DIFF = "edit_diff"
NEW_FILE = "new_file"
FAMILIES = (EDIT_FILE, EDIT_DIFF, NEW_FILE)

HEADER = "You are a coding agent working in the repository {repo}.\nTask: {task}\n"
EDIT_FILE_TAIL = "Reply with the complete updated file.\n"
EDIT_DIFF_TAIL = "Reply with a unified diff of the change.\n"

NEW_FILE_SHARE = 0.04  # share of new_file requests, as in the real traces
REQUESTS_PER_REPO = 50  # one stdlib package ("repository") per this many requests
MAX_NEW_PER_REPO = 3
EDIT_LINES = (80, 600)  # size of files that get edited (whole file, in lines)
NEW_LINES = (60, 250)  # size of modules used as new_file replies
NEW_MAX_CHARS = 5500
WINDOW_MAX_CHARS = 12000
WINDOW_MIN_LINES = 30
SKIP_PACKAGES = {
    "test",
    "idlelib",
    "lib2to3",
    "encodings",
    "pydoc_data",
    "turtledemo",
    "site-packages",
    "ensurepip",
    "distutils",
}
SKIP_DIRS = {"test", "tests", "idle_test", "__pycache__"}

TASK_BODIES = (
    "No functional change for existing callers.",
    "Found while reviewing the module; keeps the code consistent with the rest of the package.",
    "Small cleanup before the next change.",
    "Makes the failure mode explicit instead of failing later with an obscure error.",
    "Follow-up to review comments.",
)

# --------------------------------------------------------------------------
# Source material: stdlib packages as repositories
# --------------------------------------------------------------------------


@dataclass
class Repo:
    """One stdlib package acting as a repository, with its edit history."""

    name: str
    root: Path  # the stdlib directory; file paths are relative to it
    sources: dict[str, str]  # path -> original text, for all .py files
    edit_pool: list[str]
    new_pool: list[str]  # reserved for new_file requests, in emission order
    current: dict[str, str] = field(default_factory=dict)  # path -> edited window
    touched: list[str] = field(default_factory=list)
    written: set[str] = field(default_factory=set)
    bad: set[str] = field(default_factory=set)


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def candidate_packages(root: Path) -> list[str]:
    """Top-level stdlib packages, sorted by name."""
    names = []
    for p in sorted(root.iterdir()):
        if (
            p.is_dir()
            and (p / "__init__.py").is_file()
            and p.name.isidentifier()
            and not p.name.startswith("_")
            and p.name not in SKIP_PACKAGES
        ):
            names.append(p.name)
    return names


def package_sources(root: Path, name: str) -> dict[str, str]:
    """All .py files of a package (test directories excluded), by relative path."""
    out: dict[str, str] = {}
    for p in sorted((root / name).rglob("*.py")):
        rel = p.relative_to(root)
        if SKIP_DIRS.intersection(rel.parts[:-1]):
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if "\t" in text or "\r" in text:
            continue
        out[rel.as_posix()] = text
    return out


def n_lines(text: str) -> int:
    return text.count("\n")


def parses(text: str) -> bool:
    try:
        ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    return True


def load_repo(root: Path, name: str, rng: random.Random) -> tuple[Repo, list[str]] | None:
    """Load a package; returns the repo and its candidate new files (in order)."""
    sources = package_sources(root, name)
    edit = [p for p, t in sources.items() if EDIT_LINES[0] <= n_lines(t) <= EDIT_LINES[1]]
    new = [
        p
        for p, t in sources.items()
        if NEW_LINES[0] <= n_lines(t) <= NEW_LINES[1] and len(t) <= NEW_MAX_CHARS and parses(t)
    ]
    # Prefer new files that are not also edit candidates, then shorter ones.
    rng.shuffle(new)
    new.sort(key=lambda p: (p in edit, len(sources[p]) > 4000))
    reserved: list[str] = []
    for p in new:
        if len(reserved) == MAX_NEW_PER_REPO or len(set(edit) - set(reserved) - {p}) < 3:
            continue
        reserved.append(p)
    if len(edit) < 3 or not reserved:
        return None
    return Repo(name, root, sources, edit, []), reserved


def list_dir_entries(repo: Repo, directory: str, hidden: set[str]) -> list[str]:
    """Directory listing as shown in new_file prompts (full relative paths)."""
    out = []
    for p in sorted((repo.root / directory).iterdir()):
        rel = p.relative_to(repo.root).as_posix()
        if p.name in SKIP_DIRS or p.name.startswith(".") or rel in hidden:
            continue
        out.append(rel)
    return out


# --------------------------------------------------------------------------
# Windows: cut long files at top-level statement boundaries
# --------------------------------------------------------------------------


def top_level_starts(tree: ast.Module, lines: list[str]) -> list[int]:
    """0-based line numbers where top-level statements (with their decorators
    and leading comments) start."""
    starts = []
    prev_end = 0
    for node in tree.body:
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
        while start - 1 >= prev_end and lines[start - 1].lstrip().startswith("#"):
            start -= 1
        starts.append(start)
        prev_end = node.end_lineno or node.lineno
    return starts


def tidy(lines: list[str]) -> str:
    """Join lines, dropping leading/trailing blank lines, ending with a newline."""
    text = "".join(lines).strip("\n")
    return text + "\n" if text else ""


def choose_window(text: str, rng: random.Random) -> str | None:
    """A window of whole top-level statements of at most ~target lines."""
    lines = text.splitlines(keepends=True)
    target = int(rng.triangular(60, 300, 150))
    if len(lines) <= target and len(text) <= WINDOW_MAX_CHARS:
        return tidy(lines)
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    bounds = sorted(set(top_level_starts(tree, lines)) | {0, len(lines)})
    offs = [0]
    for line in lines:
        offs.append(offs[-1] + len(line))
    spans = []
    for i, s in enumerate(bounds):
        ends = [
            e
            for e in bounds[i + 1 :]
            if WINDOW_MIN_LINES <= e - s <= target and offs[e] - offs[s] <= WINDOW_MAX_CHARS
        ]
        if ends:
            spans.append((s, max(ends)))
    if not spans:
        return None
    s, e = spans[0] if spans[0][0] == 0 and rng.random() < 0.4 else rng.choice(spans)
    window = tidy(lines[s:e])
    return window if parses(window) else None


# --------------------------------------------------------------------------
# Git-style unified diff
# --------------------------------------------------------------------------


def _range(start: int, stop: int) -> str:
    """Hunk range as git / difflib write it (1-based start, count)."""
    begin, length = start + 1, stop - start
    if length == 1:
        return f"{begin}"
    if length == 0:
        begin -= 1
    return f"{begin},{length}"


def _func_context(lines: list[str], first: int) -> str:
    """git's default funcname: the nearest line above the hunk starting with a
    letter, '_' or '$', cut to 80 bytes, trailing whitespace removed."""
    for k in range(first - 1, -1, -1):
        line = lines[k].rstrip("\n")
        if line[:1].isalpha() or line[:1] in ("_", "$"):
            return line.encode("utf-8")[:80].decode("utf-8", "ignore").rstrip()
    return ""


def unified_diff(old: str, new: str, context: int = 3) -> str:
    """Unified diff with ``@@`` hunk headers only (as in ``git diff`` bodies)."""
    a = old.splitlines(keepends=True)
    b = new.splitlines(keepends=True)
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    out = []
    for group in matcher.get_grouped_opcodes(context):
        i1, i2, j1, j2 = group[0][1], group[-1][2], group[0][3], group[-1][4]
        header = f"@@ -{_range(i1, i2)} +{_range(j1, j2)} @@"
        func = _func_context(a, i1)
        out.append(f"{header} {func}\n" if func else header + "\n")
        for tag, x1, x2, y1, y2 in group:
            if tag == "equal":
                out.extend(" " + line for line in a[x1:x2])
                continue
            if tag in ("replace", "delete"):
                out.extend("-" + line for line in a[x1:x2])
            if tag in ("replace", "insert"):
                out.extend("+" + line for line in b[y1:y2])
    return "".join(out)


# --------------------------------------------------------------------------
# Edits
# --------------------------------------------------------------------------

Edit = Callable[[str, ast.Module, random.Random], tuple[str, str] | None]

FuncNode = (ast.FunctionDef, ast.AsyncFunctionDef)

RENAMES = {
    "i": "idx",
    "j": "pos",
    "k": "key",
    "n": "count",
    "s": "text",
    "f": "fp",
    "fp": "fileobj",
    "buf": "buffer",
    "buffer": "buf",
    "res": "result",
    "result": "res",
    "val": "value",
    "value": "val",
    "data": "payload",
    "line": "current_line",
    "lines": "line_list",
    "msg": "message",
    "message": "msg",
    "obj": "target",
    "name": "name_str",
    "path": "filepath",
    "args": "arguments",
    "kwargs": "options",
    "item": "element",
    "items": "entries",
    "c": "ch",
    "ch": "char",
    "e": "exc",
    "exc": "error",
    "x": "item",
    "v": "value",
    "d": "mapping",
    "l": "values",
    "t": "tok",
    "p": "part",
    "m": "match",
    "key": "k",
    "size": "length",
    "length": "size",
    "text": "source",
    "node": "current",
    "parts": "pieces",
    "index": "idx",
    "start": "begin",
    "end": "stop",
    "host": "hostname",
    "port": "port_number",
    "sock": "conn",
    "loop": "event_loop",
    "fut": "future",
    "future": "fut",
}
RENAME_SUFFIXES = ("_val", "_value", "_obj", "_arg")
WORD_SWAPS = (
    ("invalid", "unsupported"),
    ("Invalid", "Unsupported"),
    ("must be", "should be"),
    ("unknown", "unrecognized"),
    ("Unknown", "Unrecognized"),
    ("expected", "expecting"),
    ("error", "failure"),
    ("not supported", "unsupported"),
    ("missing", "no"),
    ("cannot", "can not"),
    ("can not", "cannot"),
    ("got", "received"),
)


def functions(tree: ast.AST) -> list[ast.FunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, FuncNode)]


def params(func: ast.FunctionDef) -> list[ast.arg]:
    a = func.args
    return [p for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg not in ("self", "cls")]


def enclosing_function(tree: ast.Module, lineno: int) -> ast.FunctionDef | None:
    best = None
    for f in functions(tree):
        if f.lineno <= lineno <= (f.end_lineno or f.lineno):
            if best is None or f.lineno >= best.lineno:
                best = f
    return best


def where(tree: ast.Module, lineno: int) -> str:
    f = enclosing_function(tree, lineno)
    return f"in {f.name}()" if f else "at module level"


def indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" "))]


def body_insert_point(func: ast.FunctionDef, lines: list[str]) -> tuple[int, str] | None:
    """0-based line index where statements go at the top of the body (after
    the docstring) and the body indentation."""
    first = func.body[0]
    start = min([first.lineno] + [d.lineno for d in getattr(first, "decorator_list", [])])
    if start == func.lineno or (len(func.body) == 1 and is_docstring(first)):
        return None
    indent = indent_of(lines[start - 1])
    if not indent or lines[start - 1][len(indent) : len(indent) + 1] == "#":
        return None
    if is_docstring(first):
        return (first.end_lineno or first.lineno), indent
    return start - 1, indent


def header_end(func: ast.FunctionDef) -> int:
    """1-based last line of a function's signature (an approximation: the end
    of its last argument, default or return annotation)."""
    a = func.args
    parts = a.posonlyargs + a.args + a.kwonlyargs + a.defaults + [d for d in a.kw_defaults if d]
    parts += [p for p in (a.vararg, a.kwarg, func.returns) if p is not None]
    return max([func.lineno] + [p.end_lineno or p.lineno for p in parts])


def is_docstring(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def splice(lines: list[str], at: int, new: list[str], remove: int = 0) -> str:
    return "".join(lines[:at] + new + lines[at + remove :])


def replace_at(lines: list[str], spots: list[tuple[int, int, str, str]]) -> str | None:
    """Replace ``old`` by ``new`` at (1-based line, utf-8 byte col) spots,
    checking that ``old`` is really there."""
    out = [line.encode("utf-8") for line in lines]
    for lineno, col, old, new in sorted(spots, reverse=True):
        raw = out[lineno - 1]
        if raw[col : col + len(old.encode())] != old.encode():
            return None
        out[lineno - 1] = raw[:col] + new.encode() + raw[col + len(old.encode()) :]
    return b"".join(out).decode("utf-8")


def new_name(old: str, rng: random.Random) -> str:
    if old in RENAMES:
        return RENAMES[old]
    for suffix in RENAME_SUFFIXES:  # undo an earlier rename
        if old.endswith(suffix) and len(old) > len(suffix):
            return old[: -len(suffix)]
    base = old.lstrip("_")
    if len(base) <= 3:
        return f"{base}_val"
    return base + rng.choice(RENAME_SUFFIXES[1:])


def edit_rename(text: str, tree: ast.Module, rng: random.Random) -> tuple[str, str] | None:
    lines = text.splitlines(keepends=True)
    funcs = [f for f in functions(tree) if (f.end_lineno or 0) - f.lineno >= 4]
    rng.shuffle(funcs)
    for func in funcs[:6]:
        declared = {
            n for s in ast.walk(func) if isinstance(s, (ast.Global, ast.Nonlocal)) for n in s.names
        }
        arg_names = {p.arg for p in params(func)}
        stores = {
            n.id for n in ast.walk(func) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
        }
        used = (
            {n.id for n in ast.walk(func) if isinstance(n, ast.Name)}
            | {a.arg for a in ast.walk(func) if isinstance(a, ast.arg)}
            | {n.attr for n in ast.walk(func) if isinstance(n, ast.Attribute)}
        )
        names = sorted((arg_names | stores) - declared - {"self", "cls", "_"})
        names = [n for n in names if not n.startswith("__")]
        if not names:
            continue
        old = rng.choice(names)
        new = new_name(old, rng)
        if (
            new in used
            or keyword.iskeyword(new)
            or hasattr(builtins, new)
            or not new.isidentifier()
        ):
            continue
        spots = [
            (n.lineno, n.col_offset, old, new)
            for n in ast.walk(func)
            if isinstance(n, ast.Name) and n.id == old
        ]
        spots += [
            (a.lineno, a.col_offset, old, new)
            for a in ast.walk(func)
            if isinstance(a, ast.arg) and a.arg == old
        ]
        result = replace_at(lines, spots)
        if result is None or not parses(result):
            continue
        kind = "parameter" if old in arg_names else "local variable"
        return result, f"rename {kind} {old} to {new} in {func.name}()"
    return None


def edit_guard(text: str, tree: ast.Module, rng: random.Random) -> tuple[str, str] | None:
    lines = text.splitlines(keepends=True)
    funcs = functions(tree)
    rng.shuffle(funcs)
    for func in funcs[:8]:
        required = [
            p.arg for p in func.args.posonlyargs + func.args.args if p.arg not in ("self", "cls")
        ]
        required = required[: max(0, len(required) - len(func.args.defaults))]
        spot = body_insert_point(func, lines)
        if not required or spot is None:
            continue
        at, ind = spot
        p = rng.choice(required)
        body = "".join(lines[func.lineno - 1 : func.end_lineno])
        if f"if {p} is None:" in body or f"assert {p} is not None" in body:
            continue
        style = rng.randrange(3)
        if style == 0:
            new = [
                f"{ind}if {p} is None:\n",
                f'{ind}    raise ValueError("{p} must not be None")\n',
            ]
            desc = f"raise ValueError in {func.name}() when {p} is None"
        elif style == 1:
            new = [
                f"{ind}if {p} is None:\n",
                f"{ind}    raise TypeError(\"{func.name}() argument '{p}' must not be None\")\n",
            ]
            desc = f"reject a None {p} in {func.name}() with a TypeError"
        else:
            new = [f'{ind}assert {p} is not None, "{p} is required"\n']
            desc = f"assert that {p} is given in {func.name}()"
        return splice(lines, at, new), desc
    return None


def humanize(name: str) -> str:
    special = {
        "__init__": "Initialize the instance",
        "__repr__": "Return repr(self)",
        "__str__": "Return str(self)",
        "__eq__": "Return self == other",
        "__len__": "Return the number of items",
        "__iter__": "Iterate over the items",
    }
    if name in special:
        return special[name]
    words = [w for w in name.strip("_").split("_") if w] or [name]
    verb = words[0].lower()
    rest = " ".join(words[1:])
    if verb in (
        "get",
        "is",
        "has",
        "make",
        "read",
        "write",
        "parse",
        "set",
        "add",
        "handle",
        "close",
        "open",
        "send",
        "check",
        "find",
        "run",
        "create",
        "format",
        "update",
        "remove",
        "load",
        "start",
        "stop",
    ):
        return f"{verb.capitalize()} {rest}".strip() if rest else f"{verb.capitalize()} the value"
    return f"Helper for {' '.join(words)}"


def edit_doc(text: str, tree: ast.Module, rng: random.Random) -> tuple[str, str] | None:
    lines = text.splitlines(keepends=True)
    funcs = [f for f in functions(tree) if not is_docstring(f.body[0])]
    rng.shuffle(funcs)
    for func in funcs[:8]:
        spot = body_insert_point(func, lines)
        if spot is None:
            continue
        at, ind = spot
        if rng.random() < 0.6:
            while at - 1 > header_end(func) - 1 and lines[at - 1].lstrip().startswith("#"):
                at -= 1  # a docstring goes above the leading comments
            new = [f'{ind}"""{humanize(func.name)}."""\n']
            desc = f"add a docstring to {func.name}()"
        elif "# TODO" in "".join(lines[func.lineno - 1 : func.end_lineno]):
            continue
        else:
            ps = [p.arg for p in params(func)]
            what = f"an empty {ps[0]}" if ps else "errors"
            new = [f"{ind}# TODO: handle {what} here instead of in the callers.\n"]
            desc = f"note a TODO in {func.name}()"
        return splice(lines, at, new), desc
    return None


def edit_kwarg(text: str, tree: ast.Module, rng: random.Random) -> tuple[str, str] | None:
    lines = text.splitlines(keepends=True)
    funcs = functions(tree)
    rng.shuffle(funcs)
    for func in funcs[:8]:
        a = func.args
        if a.vararg or a.kwarg or a.kwonlyargs or a.posonlyargs or not a.args:
            continue
        spot = body_insert_point(func, lines)
        if spot is None:
            continue
        at, ind = spot
        req = [p.arg for p in params(func)]
        kw = "strict" if req and rng.random() < 0.6 else "verbose"
        if kw in {n.id for n in ast.walk(func) if isinstance(n, ast.Name)} | {
            p.arg for p in a.args
        }:
            continue
        ends = [(a.args[-1].end_lineno, a.args[-1].end_col_offset)]
        if a.defaults:
            ends.append((a.defaults[-1].end_lineno, a.defaults[-1].end_col_offset))
        line_no, col = max(ends)
        if line_no is None or col is None or line_no - 1 >= at:
            continue
        raw = lines[line_no - 1].encode("utf-8")
        edited = list(lines)
        edited[line_no - 1] = (raw[:col] + f", {kw}=False".encode() + raw[col:]).decode("utf-8")
        if kw == "strict":
            p = rng.choice(req)
            use = [
                f"{ind}if strict and {p} is None:\n",
                f'{ind}    raise ValueError("{p} is required in strict mode")\n',
            ]
        else:
            use = [f"{ind}if verbose:\n", f'{ind}    print("{func.name}: called")\n']
        result = splice(edited, at, use)
        if parses(result):
            return result, f"add a {kw} keyword argument to {func.name}()"
    return None


def reads_target(tree: ast.Module, st: ast.stmt) -> bool:
    """Whether a plain name assigned by ``st`` is read in its function (or module)."""
    targets = st.targets if isinstance(st, ast.Assign) else [st.target]
    names = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    scope: ast.AST = enclosing_function(tree, st.lineno) or tree
    return any(
        isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id in names
        for n in ast.walk(scope)
    )


def edit_delete(text: str, tree: ast.Module, rng: random.Random) -> tuple[str, str] | None:
    lines = text.splitlines(keepends=True)
    options: list[tuple[int, int, str]] = []  # (start, count, description)
    for node in ast.walk(tree):
        for body_name in ("body", "orelse", "finalbody"):
            body = getattr(node, body_name, None)
            if not isinstance(body, list) or len(body) < 2 or isinstance(node, ast.Module):
                continue
            for st in body:
                if is_docstring(st) or st.lineno == getattr(node, "lineno", -1):
                    continue
                span = (st.end_lineno or st.lineno) - st.lineno + 1
                if span > 4:
                    continue
                if isinstance(st, ast.Expr) and isinstance(st.value, ast.Call):
                    call = ast.unparse(st.value.func)
                    what = f"the call to {call}()"
                elif isinstance(st, ast.Assert):
                    what = "an assertion"
                elif isinstance(st, (ast.Assign, ast.AugAssign)) and not reads_target(tree, st):
                    what = (
                        f"the {ast.unparse(st).split('=')[0].strip().rstrip(' +-*/|&')} assignment"
                    )
                else:
                    continue
                options.append((st.lineno - 1, span, f"remove {what} {where(tree, st.lineno)}"))
    i = 0
    while i < len(lines):  # runs of comment lines inside indented code
        if lines[i].startswith(" ") and lines[i].lstrip().startswith("#"):
            j = i
            while j < len(lines) and lines[j].lstrip().startswith("#"):
                j += 1
            if j - i <= 4:
                options.append((i, j - i, f"drop a stale comment {where(tree, i + 1)}"))
            i = j
        else:
            i += 1
    rng.shuffle(options)
    for start, count, desc in options[:6]:
        result = splice(lines, start, [], remove=count)
        if parses(result):
            return result, desc
    return None


def edit_constant(text: str, tree: ast.Module, rng: random.Random) -> tuple[str, str] | None:
    lines = text.splitlines(keepends=True)
    in_fstring = {
        id(c) for j in ast.walk(tree) if isinstance(j, ast.JoinedStr) for c in ast.walk(j)
    }
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.ClassDef) + FuncNode)
        and n.body
        and is_docstring(n.body[0])
    }
    consts = [
        c
        for c in ast.walk(tree)
        if isinstance(c, ast.Constant)
        and id(c) not in in_fstring
        and id(c) not in docstrings
        and c.lineno == c.end_lineno
    ]
    rng.shuffle(consts)
    for c in consts[:12]:
        raw = lines[c.lineno - 1].encode("utf-8")
        seg = raw[c.col_offset : c.end_col_offset].decode("utf-8", "replace")
        change = change_literal(c.value, seg, rng)
        if change is None:
            continue
        new_seg, desc = change
        result = replace_at(lines, [(c.lineno, c.col_offset, seg, new_seg)])
        if result is None or not parses(result):
            continue
        return result, f"{desc} {where(tree, c.lineno)}"
    return None


def change_literal(value: object, seg: str, rng: random.Random) -> tuple[str, str] | None:
    """New source text for a literal, and a description of the change."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not seg.isdigit() or not 2 <= value <= 10**7:
            return None
        new = rng.choice([value * 2, value + 1] + ([value * 10] if value < 100 else []))
        return str(new), f"change the constant {value} to {new}"
    if not isinstance(value, str) or " " not in value or not 8 <= len(seg) <= 90:
        return None
    prefix = seg[: len(seg) - len(seg.lstrip("rRbBuU"))]
    body = seg[len(prefix) :]
    if prefix.lower() == "b" or body[:3] in ('"""', "'''") or body[0] not in "'\"":
        return None
    quote, inner = body[0], body[1:-1]
    swaps = [(a, b) for a, b in WORD_SWAPS if a in inner]
    if swaps:
        a, b = rng.choice(swaps)
        inner = inner.replace(a, b, 1)
    elif inner[:1].islower() and inner.split(" ")[0].isalpha():
        inner = inner[0].upper() + inner[1:]
    elif inner[-1:].isalpha():
        inner += "."
    else:
        return None
    return f"{prefix}{quote}{inner}{quote}", "reword a message string"


EDITS: tuple[tuple[Edit, float], ...] = (
    (edit_rename, 0.26),
    (edit_guard, 0.14),
    (edit_doc, 0.12),
    (edit_kwarg, 0.10),
    (edit_delete, 0.16),
    (edit_constant, 0.22),
)


def apply_edits(text: str, count: int, rng: random.Random) -> tuple[str, list[str]] | None:
    """Apply ``count`` random edits in sequence; the new text and descriptions."""
    descs: list[str] = []
    original = set(text.splitlines())
    for _ in range(count * 6):
        if len(descs) == count:
            break
        (edit,) = rng.choices([e for e, _ in EDITS], weights=[w for _, w in EDITS])
        tree = ast.parse(text)
        done = edit(text, tree, rng)
        if done is None or done[0] == text or not parses(done[0]):
            continue
        # An edit may not remove or rewrite a line added earlier in this commit.
        if not (set(text.splitlines()) - set(done[0].splitlines())) <= original:
            continue
        text = done[0]
        descs.append(done[1])
    return (text, descs) if descs else None


def task_line(descs: list[str], rng: random.Random) -> str:
    if len(descs) == 1:
        task = descs[0]
    else:
        task = ", ".join(descs[:-1]) + " and " + descs[-1]
    task = task[0].upper() + task[1:]
    if rng.random() < 0.2:
        task += "\n\n" + rng.choice(TASK_BODIES)
    return task


# --------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------


def request_id(repo: str, seed: int, serial: int, path: str, suffix: str) -> str:
    digest = hashlib.sha1(f"{seed}:{repo}:{serial}:{path}".encode()).hexdigest()[:10]
    return f"{repo}-{digest}-{suffix}"


def file_block(path: str, text: str) -> str:
    return f"File: {path}\n```\n{text}```\n"


def pick_file(repo: Repo, rng: random.Random) -> str | None:
    fresh = [p for p in repo.edit_pool if p not in repo.touched and p not in repo.bad]
    if repo.touched and (not fresh or rng.random() < 0.65):
        return rng.choice(repo.touched[-4:])
    return rng.choice(fresh) if fresh else None


def current_text(repo: Repo, path: str, rng: random.Random) -> str | None:
    if path not in repo.current:
        window = choose_window(repo.sources[path], rng)
        if window is None or not functions(ast.parse(window)):
            repo.bad.add(path)
            return None
        repo.current[path] = window
    return repo.current[path]


def commit_requests(repo: Repo, rng: random.Random, seed: int, serial: int) -> list[dict]:
    """One commit: an edit_file request followed by its edit_diff twin."""
    for _ in range(30):
        path = pick_file(repo, rng)
        if path is None:
            break
        old = current_text(repo, path, rng)
        if old is None:
            continue
        count = rng.choices([1, 2, 3], weights=[0.5, 0.35, 0.15])[0]
        done = apply_edits(old, count, rng)
        if done is None:
            continue
        new, descs = done
        repo.current[path] = new
        if path not in repo.touched:
            repo.touched.append(path)
        else:  # most recently edited last
            repo.touched.remove(path)
            repo.touched.append(path)
        head = HEADER.format(repo=repo.name, task=task_line(descs, rng)) + file_block(path, old)
        return [
            {
                "id": request_id(repo.name, seed, serial, path, "file"),
                "family": EDIT_FILE,
                "prompt": head + EDIT_FILE_TAIL,
                "response": new,
            },
            {
                "id": request_id(repo.name, seed, serial, path, "diff"),
                "family": EDIT_DIFF,
                "prompt": head + EDIT_DIFF_TAIL,
                "response": unified_diff(old, new),
            },
        ]
    raise RuntimeError(f"no editable file left in {repo.name}")


def module_summary(text: str) -> str:
    try:
        doc = ast.get_docstring(ast.parse(text)) or ""
    except SyntaxError:
        doc = ""
    first = doc.strip().split("\n\n")[0].replace("\n", " ").strip().rstrip(".")
    return first if 0 < len(first) <= 100 else ""


def new_file_request(repo: Repo, rng: random.Random, seed: int, serial: int) -> dict:
    path = repo.new_pool[len(repo.written)]
    directory = path.rsplit("/", 1)[0] if "/" in path else "."
    hidden = (set(repo.new_pool) - repo.written) | {path}
    listing = ", ".join(list_dir_entries(repo, directory, hidden))
    summary = module_summary(repo.sources[path])
    task = f"Add {path.rsplit('/', 1)[-1]}" + (f": {summary}" if summary else "")
    repo.written.add(path)
    prompt = (
        HEADER.format(repo=repo.name, task=task)
        + f"Files in {directory}: {listing}\nWrite the new file {path}.\n"
    )
    text = repo.sources[path]
    return {
        "id": request_id(repo.name, seed, serial, path, "new"),
        "family": NEW_FILE,
        "prompt": prompt,
        "response": text if text.endswith("\n") else text + "\n",
    }


def plan(n: int, caps: list[int]) -> tuple[list[int], list[int]]:
    """Per repo: number of commits (2 requests each) and of new_file requests."""
    k = len(caps)
    # the count closest to the target share that leaves an even rest (commits)
    fits = [c for c in range(min(n, sum(caps)) + 1) if (n - c) % 2 == 0]
    n_new = min(fits, key=lambda c: (abs(c - n * NEW_FILE_SHARE), c))
    new = [0] * k
    for _i in range(n_new):  # round robin within capacity
        order = sorted(range(k), key=lambda r: (new[r] >= caps[r], new[r], r))
        new[order[0]] += 1
    pairs_total = (n - n_new) // 2
    pairs = [pairs_total // k + (1 if r < pairs_total % k else 0) for r in range(k)]
    return pairs, new


def choose_repos(n: int, rng: random.Random) -> list[tuple[Repo, list[str]]]:
    root = stdlib_dir()
    names = candidate_packages(root)
    rng.shuffle(names)
    want = max(1, math.ceil(n / REQUESTS_PER_REPO))
    chosen = []
    for name in names:
        loaded = load_repo(root, name, rng)
        if loaded is not None:
            chosen.append(loaded)
        if len(chosen) == want:
            break
    if not chosen:
        raise RuntimeError(f"no usable stdlib package under {root}")
    return chosen


def generate(n: int, seed: int) -> list[dict]:
    """``n`` synthetic requests (dicts with id, family, prompt, response)."""
    if n <= 0:
        return []
    rng = random.Random(seed)
    chosen = choose_repos(n, rng)
    pairs, news = plan(n, [len(c) for _, c in chosen])
    out: list[dict] = []
    serial = 0
    for (repo, reserved), n_pairs, n_new in zip(chosen, pairs, news):
        repo.new_pool = reserved[:n_new]
        repo.edit_pool = [p for p in repo.edit_pool if p not in repo.new_pool]
        events = ["commit"] * n_pairs + ["new"] * n_new
        rng.shuffle(events)
        for event in events:
            serial += 1
            if event == "commit":
                out.extend(commit_requests(repo, rng, seed, serial))
            else:
                out.append(new_file_request(repo, rng, seed, serial))
    assert len(out) == n, (len(out), n)
    return out


def summary(rows: list[dict]) -> str:
    counts = Counter(r["family"] for r in rows)
    chars = sum(len(r["prompt"]) + len(r["response"]) for r in rows)
    fams = ", ".join(f"{f}={counts.get(f, 0)}" for f in FAMILIES)
    repos = sorted({r["id"].split("-")[0] for r in rows})
    return f"{len(rows)} requests ({fams}), {chars} chars, repositories: {' '.join(repos)}"


def write_jsonl(rows: Iterable[dict], path: Path) -> None:
    """Write request dicts as JSON lines (creating the parent directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def synthetic_trace_file(out_dir: Path, n: int, seed: int = 0) -> Path:
    """``out_dir/synthetic-requests-n<n>-s<seed>.jsonl``, generated on first use."""
    path = out_dir / f"synthetic-requests-n{n}-s{seed}.jsonl"
    if not path.is_file():
        write_jsonl(generate(n, seed), path)
    return path
