"""Realigned drafts: copies from the request's own text that survive a few
substituted tokens (a diff's line prefixes) or one inserted token, against
the brute-force reference on long texts (the candidate window and limits are
reached) and on the cases they are for."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from suffix_reference import RefSuffixCache
from test_suffix_differential import assert_same

from arctic_inference_core.suffix import SuffixDecodingCache


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_long_own_texts_match_reference(data: st.DataObject) -> None:
    depth = data.draw(st.integers(2, 12), label="depth")
    alphabet = data.draw(st.integers(2, 6), label="alphabet")
    share = data.draw(st.booleans(), label="share")
    native = SuffixDecodingCache(depth, share_active_responses=share)
    ref = RefSuffixCache(depth, share_active_responses=share)
    # A text, then copies of its pieces with a few tokens changed or
    # inserted, so that realignment finds matches across them.
    base = data.draw(st.lists(st.integers(0, alphabet - 1), min_size=20, max_size=120))
    native.start_request("r", base)
    ref.start_request("r", base)
    for step in range(data.draw(st.integers(1, 12))):
        a = data.draw(st.integers(0, len(base) - 1))
        piece = base[a : a + data.draw(st.integers(1, 30))]
        for _ in range(data.draw(st.integers(0, 2))):
            i = data.draw(st.integers(0, len(piece)))
            t = data.draw(st.integers(0, alphabet + 1))
            if data.draw(st.booleans()) and i < len(piece):
                piece[i] = t
            else:
                piece.insert(i, t)
        native.add_active_response("r", piece)
        ref.add_active_response("r", piece)
        kwargs = dict(
            max_spec_tokens=data.draw(st.sampled_from([None, 4, 16])),
            max_spec_factor=data.draw(st.sampled_from([0.5, 1.0, 3.0])),
            use_tree_spec=data.draw(st.booleans()),
        )
        assert_same(
            native.speculate("r", None, **kwargs), ref.speculate("r", None, **kwargs), f"{step}"
        )
    native.check_integrity()


def _draft(own: list[int], **kw) -> list[int]:
    cache = SuffixDecodingCache(64)
    cache.start_request("r", own)
    return cache.speculate("r", None, max_spec_tokens=16, **kw).token_ids


def test_diff_lines_keep_their_prefix() -> None:
    # A "file" of lines (indent token 7, content, end token 9); the response
    # is the same lines with each indent 7 written as 8 (a diff's context
    # lines): the draft copies the file with 7 -> 8.
    lines = [[7, 100 + i, 200 + i, 300 + i, 9] for i in range(12)]
    file = [t for line in lines for t in line]
    diff = [8 if t == 7 else t for t in file[:27]]  # up to inside line 5
    draft = _draft([1, 2] + file + [3] + diff)
    want = [8 if t == 7 else t for t in file[27:43]]
    assert draft == want


def test_an_inserted_token_is_skipped() -> None:
    text = list(range(100, 160))
    resp = text[:20] + [5] + text[20:23]  # one token inserted, then the text again
    # 3 tokens match exactly (budget 3); realigned, 23 do: 16 tokens (the cap).
    assert _draft([1] + text + [2] + resp) == text[23:39]


def test_at_most_16_candidates_are_realigned() -> None:
    # n earlier occurrences of [1, 2], each after a different token: all
    # match the context's last 2 tokens. Up to 16 are tried, more are not.
    for n, realigned in ((16, True), (17, False)):
        own = [t for i in range(n) for t in (60 + i, 10 + i, 1, 2, 40 + i)] + [65, 99, 1, 2]
        cache, ref = SuffixDecodingCache(64), RefSuffixCache(64)
        cache.start_request("r", own)
        ref.start_request("r", own)
        got = cache.speculate("r", None)
        assert_same(got, ref.speculate("r", None), f"n={n}")
        assert bool(got.token_ids) is realigned
