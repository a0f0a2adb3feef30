"""Pure-Python reference for suffix decoding: slow, brute force, obviously right.

It defines the semantics the C++ trees must reproduce exactly, in terms of
occurrence counts instead of tree nodes:

- occ(S, s): number of positions (q, i) with q[i:i+len(s)] == s over the
  sequences S, for 1 <= len(s) <= depth.
- Local corpus of a request: [its prompt + response].
- For a context c, local match lengths m = M..1 are tried, M being the longest
  suffix of c (at most `depth`) that occurs. Only the longest m of each
  occurrence count is drafted (a shorter match with the same count has the
  same occurrences), unless the longer draft reached the depth limit,
  and the search stops once the budget
  min(k, int(m * factor + offset + 1e-6)) cannot beat the best score.
- Path drafting from s follows the most frequent next token (ties: smallest
  id), multiplying p by occ(s + t) / sum over t' of occ(s + t') (occurrences
  with no next token, like the request's own latest tokens, do not count),
  stopping below min_token_prob. At len(s) == depth the counts end: local
  drafting copies the rest of the one occurrence that continues (if exactly
  one does); global drafting copies what follows the occurrence of s that
  became final last, if its response is still cached (below).
- Without sharing, the global corpus holds the responses of cached requests
  that have stopped (a response enters it whole when its request stops, and
  all its occurrences become final then, in position order).
- With sharing (share_active_responses), it holds every cached response,
  those of running requests as generated so far (the requester's own
  included); an occurrence becomes final when the token after it is added,
  or when its request stops. The requester's local corpus is then its
  prompt alone, unless its response is no longer cached (then prompt +
  response), so its own text counts once.
- The best local draft wins unless the global one scores strictly higher.
- A realigned draft (see ``realign``) from the request's own text (prompt +
  response) replaces that winner if it scores strictly higher.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field


@dataclass
class RefDraft:
    token_ids: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    score: float = 0.0
    match_len: int = 0
    cut: bool = False  # reached the depth limit (copied past it, or stopped)


def occurrences(seqs: Sequence[list[int]], s: Sequence[int]) -> list[tuple[int, int]]:
    n = len(s)
    s = list(s)
    return [
        (qi, i) for qi, q in enumerate(seqs) for i in range(len(q) - n + 1) if q[i : i + n] == s
    ]


def occ(seqs: Sequence[list[int]], s: Sequence[int]) -> int:
    return len(occurrences(seqs, s))


def next_counts(seqs: Sequence[list[int]], s: Sequence[int]) -> Counter:
    n = len(s)
    return Counter(seqs[qi][i + n] for qi, i in occurrences(seqs, s) if i + n < len(seqs[qi]))


def budget(m: int, k: int, factor: float, offset: float) -> int:
    b = m * factor + offset + 1e-6
    if b >= k:
        return k
    if b <= 0:
        return 0
    return int(b)


class Entry:
    """A cached response (identity matters: ids can be reused)."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.alive = True


# Newest-final copying: for a depth-long string, (entry, start) of the
# occurrence that became final last.
Finals = dict[tuple[int, ...], tuple[Entry, int]]


class Corpus:
    def __init__(
        self,
        seqs: Sequence[list[int]],
        depth: int,
        copy: bool,
        finals: Finals | None = None,
    ) -> None:
        self.seqs = seqs
        self.depth = depth
        self.copy = copy
        self.finals = finals  # global corpus: copy from the newest final occurrence

    def branching(self, s: list[int]) -> bool:
        """Whether s has other than exactly one continuation (tree mode
        expands such positions; single continuations are emitted directly)."""
        return len(s) >= self.depth or len(next_counts(self.seqs, s)) != 1

    def best_child(self, s: list[int]) -> tuple[int, int] | None:
        nxt = next_counts(self.seqs, s)
        if not nxt:
            return None
        t = min(nxt, key=lambda t: (-nxt[t], t))
        return t, nxt[t]

    def unique_continuation(self, s: list[int]) -> tuple[list[int], int] | None:
        """(sequence, index) to copy from at the depth limit, if any."""
        if self.finals is not None:
            hit = self.finals.get(tuple(s))
            if hit is None or not hit[0].alive or hit[1] + len(s) >= len(hit[0].tokens):
                return None
            return hit[0].tokens, hit[1] + len(s)
        n = len(s)
        occs = [(qi, i) for qi, i in occurrences(self.seqs, s) if i + n < len(self.seqs[qi])]
        if not self.copy or len(occs) != 1:
            return None
        qi, i = occs[0]
        return self.seqs[qi], i + len(s)

    def draft_path(self, s: list[int], k: int, min_prob: float) -> RefDraft:
        d = RefDraft()
        p = 1.0
        s = list(s)

        def push(t: int) -> None:
            d.parents.append(len(d.token_ids) - 1)
            d.token_ids.append(t)
            d.probs.append(p)
            d.score += p

        while len(d.token_ids) < k:
            if len(s) < self.depth:
                bc = self.best_child(s)
                if bc is None:
                    break
                t, c = bc
                p = p * (c / sum(next_counts(self.seqs, s).values()))
                if p < min_prob:
                    break
                push(t)
                s.append(t)
            else:
                cont = self.unique_continuation(s)
                d.cut = True
                if cont is None:
                    break
                q, j = cont
                while len(d.token_ids) < k and j < len(q):
                    push(q[j])
                    j += 1
                break
        return d

    def draft_tree(self, s: list[int], k: int, min_prob: float) -> RefDraft:
        # Mirrors the heap discipline of the C++ tree mode: ("at", s) items
        # either emit the single next token or expand the continuations into
        # ("emit", s, t) items; ties pop in insertion order.
        d = RefDraft()
        order = 0
        heap: list = []

        def push(prob: float, item: tuple, parent: int) -> None:
            nonlocal order
            heapq.heappush(heap, (-prob, order, item, parent))
            order += 1

        def emit(t: int, prob: float, parent: int) -> int:
            d.token_ids.append(t)
            d.parents.append(parent)
            d.probs.append(prob)
            d.score += prob
            return len(d.token_ids) - 1

        push(1.0, ("at", tuple(s)), -1)
        while len(d.token_ids) < k and heap:
            negp, _, item, parent = heapq.heappop(heap)
            prob = -negp
            kind = item[0]
            if kind == "copy":
                _, q, j = item
                if j >= len(q):
                    continue
                me = emit(q[j], prob, parent)
                push(prob, ("copy", q, j + 1), me)
            elif kind == "emit":
                _, st, t = item
                me = emit(t, prob, parent)
                push(prob, ("at", st + (t,)), me)
            else:
                st = list(item[1])
                if len(st) < self.depth and not self.branching(st):
                    (t,) = next_counts(self.seqs, st).keys()
                    me = emit(t, prob, parent)
                    push(prob, ("at", tuple(st) + (t,)), me)
                elif len(st) < self.depth:
                    nxt = next_counts(self.seqs, st)
                    total = sum(nxt.values())
                    for t in sorted(nxt, key=lambda t: (-nxt[t], t)):
                        cp = prob * (nxt[t] / total)
                        if cp >= min_prob:
                            push(cp, ("emit", tuple(st), t), parent)
                else:
                    cont = self.unique_continuation(st)
                    d.cut = True
                    if cont is not None:
                        push(prob, ("copy", cont[0], cont[1]), parent)
        return d

    def longest_match(self, ctx: list[int]) -> int:
        M = 0
        while M < min(len(ctx), self.depth) and occ(self.seqs, ctx[len(ctx) - M - 1 :]) > 0:
            M += 1
        return M

    def draft(self, s: list[int], k: int, min_prob: float, tree: bool) -> RefDraft:
        return self.draft_tree(s, k, min_prob) if tree else self.draft_path(s, k, min_prob)

    def best_draft(
        self, ctx: list[int], k: int, factor: float, offset: float, min_prob: float, tree: bool
    ) -> RefDraft:
        """Every match length drafted: the best score wins, the longer match
        on ties (the core skips matches that cannot win; the result is the
        same)."""
        best: RefDraft | None = None
        for m in range(self.longest_match(ctx), 0, -1):
            d = self.draft(ctx[-m:], budget(m, k, factor, offset), min_prob, tree)
            if best is None or d.score > best.score:
                d.match_len = m
                best = d
        return best if best is not None else RefDraft()


REALIGN_WINDOW = 32
REALIGN_CANDS = 16
REALIGN_PAIRS = 3


def realign(
    own: list[int], c: list[int], k: int, factor: float, offset: float, depth: int
) -> RefDraft:
    """A copy from the own text that survives a few substituted tokens or one
    inserted token. Candidates: the REALIGN_WINDOW latest positions e of
    c[-1] in ``own`` that have a next token; each matches m_e context tokens
    backwards. If some m_e >= len(c) - 1: none. Else the candidates with the
    largest m (at most REALIGN_CANDS of them, latest first) are tried: with
    q = e - m + 1 >= 1, either own[q - 1] -> c[-m - 1] is a substitution and
    matching goes on backwards, learning up to REALIGN_PAIRS pairs (a token
    equal to its counterpart matches unless it is a mapped one; a new pair
    needs a target no pair has), or c[-m - 1] is an inserted token and
    matching goes on exactly. The longest match L (first found on ties,
    substitution before insertion; L <= depth) of at least m + 2 drafts
    own[e + 1:], mapped through its pairs, budget(L) tokens, probability 1."""
    d = RefDraft()
    n, cl = len(own), len(c)
    if cl < 2 or n < 2:
        return d
    cands = [e for e in range(n - 2, -1, -1) if own[e] == c[-1]][:REALIGN_WINDOW]
    ms = []
    for e in cands:
        m = 1
        while m < cl and e - m >= 0 and own[e - m] == c[cl - 1 - m]:
            m += 1
        if m >= cl - 1:
            return d
        ms.append(m)
    if not cands:
        return d
    m = max(ms)
    best = [e for e, me in zip(cands, ms) if me == m]
    if len(best) > REALIGN_CANDS:
        return d
    x = c[cl - 1 - m]
    best_len, best_e, best_map = 0, -1, {}
    for e in best:
        q = e - m + 1
        if q < 1:
            continue
        pairs = {own[q - 1]: x}
        i, j, length = cl - m - 2, q - 2, m + 1
        while i >= 0 and j >= 0 and length < depth:
            a, b = own[j], c[i]
            if a in pairs:
                if pairs[a] != b:
                    break
            elif a != b:
                if len(pairs) == REALIGN_PAIRS or b in pairs.values():
                    break
                pairs[a] = b
            i, j, length = i - 1, j - 1, length + 1
        if length > best_len:
            best_len, best_e, best_map = length, e, dict(pairs)
        i, j, length = cl - m - 2, q - 1, m
        while i >= 0 and j >= 0 and length < depth and own[j] == c[i]:
            i, j, length = i - 1, j - 1, length + 1
        if length > best_len:
            best_len, best_e, best_map = length, e, {}
    if best_e < 0 or best_len < m + 2:
        return d
    b = budget(best_len, k, factor, offset)
    for t in own[best_e + 1 : best_e + 1 + b]:
        d.parents.append(len(d.token_ids) - 1)
        d.token_ids.append(best_map.get(t, t))
        d.probs.append(1.0)
        d.score += 1.0
    d.match_len = best_len
    return d


class RefSuffixCache:
    """Same public behaviour as SuffixDecodingCache, by brute force."""

    def __init__(
        self,
        max_tree_depth: int = 64,
        max_cached_requests: int = -1,
        share_active_responses: bool = False,
    ) -> None:
        self.depth = max_tree_depth
        self.max_cached = max_cached_requests
        self.share = share_active_responses
        self.prompt: dict[Hashable, list[int]] = {}
        self.response: dict[Hashable, list[int]] = {}
        self.cached: dict[Hashable, Entry] = {}
        self.finals: Finals = {}

    @property
    def local(self) -> dict[Hashable, list[int]]:
        """Active requests' own text (prompt + response)."""
        return {r: self.prompt[r] + self.response[r] for r in self.prompt}

    def _final(self, e: Entry, start: int) -> None:
        self.finals[tuple(e.tokens[start : start + self.depth])] = (e, start)

    def start_request(self, req_id: Hashable, prompt: Sequence[int]) -> None:
        if req_id in self.prompt:
            raise ValueError("already active")
        self.prompt[req_id] = list(prompt)
        self.response[req_id] = []
        if self.max_cached != 0:
            if req_id in self.cached:
                self.evict_cached_response(req_id)
            self.cached[req_id] = Entry()
            if self.max_cached > 0:
                while len(self.cached) > self.max_cached:
                    oldest = next(r for r in self.cached if r != req_id)
                    self.evict_cached_response(oldest)

    def add_active_response(self, req_id: Hashable, tokens: Sequence[int]) -> None:
        self.response[req_id].extend(tokens)
        e = self.cached.get(req_id)
        if self.share and e is not None:
            for t in tokens:
                e.tokens.append(t)
                if len(e.tokens) > self.depth:  # the occurrence before t is final
                    self._final(e, len(e.tokens) - 1 - self.depth)

    def stop_request(self, req_id: Hashable) -> None:
        e = self.cached.get(req_id)
        if e is not None:
            if self.share:
                if len(e.tokens) >= self.depth:
                    self._final(e, len(e.tokens) - self.depth)
            else:
                e.tokens = list(self.response[req_id])
                for i in range(len(e.tokens) - self.depth + 1):
                    self._final(e, i)
        del self.prompt[req_id], self.response[req_id]

    def evict_cached_response(self, req_id: Hashable) -> None:
        self.cached.pop(req_id).alive = False

    def speculate(
        self,
        req_id: Hashable,
        context: Sequence[int] | None,
        max_spec_tokens: int | None = None,
        max_spec_factor: float = 1.0,
        max_spec_offset: float = 0.0,
        min_token_prob: float = 0.1,
        use_tree_spec: bool = False,
    ) -> RefDraft:
        k = self.depth if max_spec_tokens is None else max_spec_tokens
        own = self.prompt[req_id] + self.response[req_id]
        ctx = list(own if context is None else context)[-self.depth :]
        args = (ctx, k, max_spec_factor, max_spec_offset, min_token_prob, use_tree_spec)
        if self.share:
            shared = req_id in self.cached
            local_text = self.prompt[req_id] if shared else own
            glob_seqs = [e.tokens for e in self.cached.values()]
        else:
            local_text = own
            glob_seqs = [e.tokens for r, e in self.cached.items() if r not in self.prompt]
        local = Corpus([local_text], self.depth, copy=True).best_draft(*args)
        glob = Corpus(glob_seqs, self.depth, copy=True, finals=self.finals).best_draft(*args)
        best = glob if glob.score > local.score else local
        re = realign(own, ctx, k, max_spec_factor, max_spec_offset, self.depth)
        return re if re.score > best.score else best
