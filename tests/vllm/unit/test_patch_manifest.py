"""The patch manifest (arctic_inference_vllm/patches/__init__.py) and the one
helper every patch replaces vLLM's objects with (patches/_wrap.py). No vLLM
needed."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from arctic_inference_vllm.patches import PATCHES, Phase, markdown_table
from arctic_inference_vllm.patches._wrap import FLAG, ORIGINAL, check, is_patched, wrap

ROOT = Path(__file__).resolve().parents[3]
PATCHES_DIR = ROOT / "arctic_inference_vllm" / "patches"
BEGIN, END = "<!-- patch manifest: begin -->", "<!-- patch manifest: end -->"


def test_docs_show_the_generated_table() -> None:
    """docs/vllm.md's table is the manifest's (regenerate it with
    `python -m arctic_inference_vllm.patches --markdown`)."""
    text = (ROOT / "docs" / "vllm.md").read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    table = text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"
    assert table == markdown_table()


def test_the_command_prints_the_table() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "arctic_inference_vllm.patches", "--markdown"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout == markdown_table()


def test_every_patch_module_is_in_the_manifest_and_complete() -> None:
    modules = sorted(p.stem for p in PATCHES_DIR.glob("*.py") if not p.stem.startswith("_"))
    assert sorted(p.name for p in PATCHES) == modules
    assert {p.phase for p in PATCHES} == set(Phase)
    for p in PATCHES:
        assert callable(importlib.import_module(p.module).apply), p.name
        assert p.targets and all(t.startswith("vllm.") for t in p.targets), p.name
        assert p.checked and p.upstream_hook and p.remove_when and p.without, p.name
        for test in p.tests:
            assert (ROOT / test).is_file(), (p.name, test)


def test_patches_use_the_one_helper() -> None:
    """No patch keeps its own idempotence flag; every one that replaces
    something goes through _wrap (swiftkv_config only adds a map entry)."""
    for p in PATCHES:
        source = (PATCHES_DIR / f"{p.name}.py").read_text()
        assert "_PATCHED" not in source, p.name
        assert not re.search(r"[\"']_arctic_inference\w*[\"']", source), p.name  # old flags
        if all("[" not in t for t in p.targets):
            assert "from arctic_inference_vllm.patches._wrap import" in source, p.name


# ------------------------------------------------------------------- _wrap


class Target:
    def method(self, a: int, b: int = 2) -> int:
        return a + b

    @staticmethod
    def static(x: int) -> int:
        return x

    @classmethod
    def klass(cls, x: int) -> str:
        return f"{cls.__name__}:{x}"


def fresh() -> type:
    return type("T", (Target,), dict(vars(Target)))


def test_wrap_replaces_once_and_keeps_the_original() -> None:
    cls = fresh()
    original = cls.__dict__["method"]
    calls = []

    def make(orig):
        def method(self, *args, **kwargs):
            calls.append(args)
            return orig(self, *args, **kwargs) * 10

        return method

    first = wrap(cls, "method", make, params=["self", "a", "b"])
    assert cls().method(1) == 30 and calls == [(1,)]
    assert getattr(first, FLAG) is True and is_patched(cls.method)
    assert getattr(cls.method, ORIGINAL) is original
    assert cls.method.__name__ == "method"  # functools.update_wrapper
    assert wrap(cls, "method", make, params=["self", "a", "b"]) is first  # idempotent
    assert cls().method(1) == 30  # not wrapped twice


def test_wrap_keeps_static_and_class_methods() -> None:
    cls = fresh()
    wrap(cls, "static", lambda orig: lambda x: orig(x) + 1, params=["x"])
    wrap(cls, "klass", lambda orig: lambda c, x: orig(c, x) + "!", params=["cls", "x"])
    assert isinstance(cls.__dict__["static"], staticmethod) and cls.static(1) == 2
    assert isinstance(cls.__dict__["klass"], classmethod) and cls.klass(1) == "T:1!"
    assert is_patched(cls.__dict__["klass"].__func__)


def test_wrap_refuses_an_unknown_shape_before_replacing() -> None:
    cls = fresh()
    with pytest.raises(AttributeError) as e:
        wrap(cls, "method", lambda orig: orig, params=["self", "a"])
    message = str(e.value)
    assert "T.method" in message
    assert "['self', 'a', 'b']" in message and "expects ['self', 'a']" in message
    assert cls.__dict__["method"] is Target.__dict__["method"]  # unchanged
    with pytest.raises(AttributeError, match="starting with"):
        check(cls, "method", ["self", "b"], prefix=True)
    check(cls, "method", ["self", "a"], prefix=True)
    with pytest.raises(AttributeError, match="expects"):
        check(cls, "static", ["y"])


def test_wrap_functions_of_modules_and_classes() -> None:
    module = type(sys)("fake_vllm_module")
    module.f = lambda: 1

    class Original:
        pass

    class Ours(Original):
        pass

    module.C = Original
    wrap(module, "f", lambda orig: lambda: orig() + 1, params=[])
    assert module.f() == 2 and getattr(module.f, ORIGINAL)() == 1
    wrap(module, "C", lambda orig: Ours)
    assert module.C is Ours and Ours.__name__ == "Ours" and getattr(Ours, ORIGINAL) is Original
    assert wrap(module, "C", lambda orig: Ours) is Ours
