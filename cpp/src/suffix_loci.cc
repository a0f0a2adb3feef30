// Where the context's suffixes are in each of SuffixCache's trees: followed
// from step to step, found again, and read lazily by best_draft.
#include <algorithm>

#include "arctic_core/check.h"
#include "arctic_core/suffix_cache.h"

namespace arctic_core {

namespace {
// Loci of the suffixes of lengths 1 .. loci.size() of a text, moved to
// those of the text followed by t: the longest drop out first (a missing
// continuation of one suffix means every longer one is missing too).
void advance_all(const SuffixTree& tree, std::vector<Locus>& loci, int32_t t) {
  size_t kept = 0;
  // Suffix of length m becomes one of length m + 1: shift up by one.
  for (; kept < loci.size(); ++kept) {
    if (!tree.advance(loci[kept], t)) break;
  }
  loci.resize(kept);
  Locus one{SuffixTree::kRoot, 0, 0};
  if (tree.advance(one, t)) {
    loci.insert(loci.begin(), one);
  } else {
    loci.clear();  // t never occurs: no suffix of the text does
  }
}
}  // namespace

SuffixCache::OwnText SuffixCache::own_text(const Request& r) const {
  OwnText t;
  t.head = r.local->tokens(0);
  if (!r.local_response) t.tail = global_.tokens(r.global_seq);
  return t;
}

void SuffixCache::update_loci(const SuffixTree& tree, const OwnText& own, Loci& st,
                              Scratch& s) const {
  // Follow the request's new tokens from the loci of the previous step; the
  // longest suffixes drop out first, and a missing continuation of one
  // suffix means every longer one is missing too. After the tree changed
  // (a sequence was inserted or removed, or others grew it), start over.
  const size_t n = own.size();
  if (st.gen != tree.generation() || st.len > n) {
    const size_t m = std::min<size_t>(n, max_depth_);
    s.tmp.resize(m);
    for (size_t i = 0; i < m; ++i) s.tmp[i] = own[n - m + i];
    st.loci.clear();
    tree.match_suffixes(s.tmp, st.loci);
  } else {
    for (size_t i = st.len; i < n; ++i) {
      advance_all(tree, st.loci, own[i]);
    }
  }
  st.gen = tree.generation();
  st.len = n;
}

void SuffixCache::update_prompt_loci(const SuffixTree& tree, const OwnText& own, PromptLoci& st,
                                     Scratch& s) const {
  // Follows the new tokens either one by one (each locus, and the run by one
  // compare), or, when that is dearer, by finding the loci below the run
  // again from the root: few and short, whatever the number of tokens.
  const std::span<const int32_t> prompt = tree.tokens(0);
  const size_t n = own.size();
  if (st.gen != tree.generation() || st.len > n) {
    rebuild_prompt_loci(tree, own, st, 0, s);
  } else if (n > st.len) {
    const size_t T = n - st.len, K = st.loci.size();
    if (T * 2 <= K + 2) {
      for (size_t i = st.len; i < n; ++i) prompt_loci_step(tree, prompt, own[i], st);
    } else {
      // Copying from the prompt: the run continues through every new token.
      const int32_t t = static_cast<int32_t>(T);
      bool copied = st.uhi > 0 && st.ulo + t <= max_depth_ &&
                    st.uend + t < static_cast<int32_t>(prompt.size());
      for (size_t j = 0; copied && j < T; ++j) copied = prompt[st.uend + 1 + j] == own[st.len + j];
      if (copied) {
        st.uend += t;
        st.uhi = std::min(st.uhi + t, max_depth_);
        st.ulong_ok = false;
        rebuild_prompt_loci(tree, own, st, st.ulo + t, s);
      } else {
        rebuild_prompt_loci(tree, own, st, 0, s);
      }
    }
  }
  st.gen = tree.generation();
  st.len = n;
}

void SuffixCache::prompt_loci_step(const SuffixTree& tree, std::span<const int32_t> prompt,
                                   int32_t t, PromptLoci& st) const {
  // A run whose next prompt token is not t ends (its suffixes occur only
  // there); the loci below it advance, the longest dropping out first.
  if (st.uhi > 0) {
    if (st.ulo < max_depth_ && st.uend + 1 < static_cast<int32_t>(prompt.size()) &&
        prompt[st.uend + 1] == t) {
      ++st.uend;
      ++st.ulo;
      if (st.uhi < max_depth_) {
        ++st.uhi;
        st.ulong_ok = st.ulong_ok && tree.advance(st.ulong, t);
      } else {
        st.ulong_ok = false;  // the longest reached the depth: a new one
      }
    } else {
      st.uhi = 0;
    }
  }
  advance_all(tree, st.loci, t);
  // A run that continued holds every shorter suffix: they continued too.
  ARCTIC_CHECK(st.uhi == 0 || static_cast<int32_t>(st.loci.size()) + 1 == st.ulo, InternalError,
               "prompt loci out of step with their run");
  // Loci at the long end that now occur once join the run.
  while (!st.loci.empty() && tree.cheap_occurrences(st.loci.back()) == 1) {
    const Locus& l = st.loci.back();
    if (st.uhi == 0) {
      st.uhi = l.depth;
      st.uend = tree.occurrence_end(l);
      st.ulong = l;
      st.ulong_ok = true;
    }
    st.ulo = l.depth;
    st.loci.pop_back();
  }
}

void SuffixCache::rebuild_prompt_loci(const SuffixTree& tree, const OwnText& own, PromptLoci& st,
                                      int32_t floor, Scratch& s) const {
  // The suffixes below the run (or below `floor`, where a known run
  // starts), from the root, shortest first, up to the first that occurs
  // once: it starts the run, whose longest member is found by comparing
  // further back with the prompt at that one occurrence.
  const std::span<const int32_t> prompt = tree.tokens(0);
  const int32_t L = static_cast<int32_t>(std::min<size_t>(own.size(), max_depth_));
  s.tmp.resize(L);
  for (int32_t i = 0; i < L; ++i) s.tmp[i] = own[own.size() - L + i];
  const int32_t* end = s.tmp.data() + L;
  st.loci.clear();
  const int32_t top = floor > 0 ? floor - 1 : L;
  Locus l;
  for (int32_t m = 1; m <= top; ++m) {
    const bool found = tree.find({end - m, static_cast<size_t>(m)}, l);
    ARCTIC_CHECK(found || floor == 0, InternalError, "prompt loci: a run member does not occur");
    if (!found) break;
    if (tree.cheap_occurrences(l) == 1) {
      if (floor == 0) {
        st.uend = tree.occurrence_end(l);
        st.uhi = m;
        while (st.uhi < L && st.uend - st.uhi >= 0 && end[-1 - st.uhi] == prompt[st.uend - st.uhi])
          ++st.uhi;
        st.ulong = l;
        st.ulong_ok = st.uhi == m;
      }
      st.ulo = m;
      return;
    }
    st.loci.push_back(l);
  }
  if (floor > 0) {
    st.ulo = floor;
  } else {
    st.uhi = 0;
  }
}

void SuffixCache::prompt_loci_view(const SuffixTree& tree, PromptLoci& st, size_t want,
                                   Scratch& s) {
  // Lengths 1 .. want (at most the longest match); the run's longest is
  // located now (best_draft starts there), shorter ones only if drafted.
  want = std::min(want, st.uhi > 0 ? static_cast<size_t>(st.uhi) : st.loci.size());
  list_view(st.loci, want, s);
  LociView& v = s.view;
  if (want == static_cast<size_t>(v.list_end)) return;
  v.run_text = tree.tokens(0).first(st.uend + 1);
  if (want == static_cast<size_t>(st.uhi)) {
    if (!st.ulong_ok) {
      st.ulong = tree.locate(v.run_text.last(want));
      st.ulong_ok = true;
    }
    v.top = st.ulong;
    v.top_ok = true;
  }
}

void SuffixCache::list_view(std::span<const Locus> list, size_t want, Scratch& s) {
  s.view = LociView();
  s.view.list = list.data();
  s.view.list_end = static_cast<int32_t>(std::min(list.size(), want));
  s.view.size = static_cast<int32_t>(want);
}

int64_t SuffixCache::view_entry(const SuffixTree& tree, const LociView& v, int32_t m, Locus& at) {
  int64_t occ = 1;
  if (m <= v.ring_n) {
    at = tree.tail_locus(v.ring_seq, m, occ);
  } else if (m <= v.list_end) {
    at = v.list[m - 1];
    occ = tree.cheap_occurrences(at);
  } else {
    at = (m == v.size && v.top_ok) ? v.top : Locus{SuffixTree::kNil, 0, 0};
  }
  return occ;
}

void SuffixCache::tail_matches(const SuffixTree& tree, std::span<const int32_t> context,
                               Scratch& s) const {
  s.loci.clear();
  tree.match_suffixes(context, s.loci);
  list_view(s.loci, s.loci.size(), s);
}

void SuffixCache::local_loci(Request& r, const OwnText& own, std::span<const int32_t> context,
                             bool is_tail, Scratch& s) const {
  if (is_tail && r.local_response) {
    s.view = LociView();
    s.view.ring_seq = 0;
    s.view.ring_n = std::min<int32_t>(r.local->tail_count(0), context.size());
    s.view.list_end = s.view.size = s.view.ring_n;
  } else if (is_tail) {
    update_prompt_loci(*r.local, own, r.lloci, s);
    prompt_loci_view(*r.local, r.lloci, context.size(), s);
  } else {
    tail_matches(*r.local, context, s);
  }
}

void SuffixCache::global_loci(Request& r, const OwnText& own, std::span<const int32_t> context,
                              bool is_tail, Scratch& s) const {
  if (is_tail && !r.local_response) {
    // The response grows in the global tree: its active suffixes are the
    // loci of the context's suffixes within the response; longer ones
    // reach into the prompt and are matched.
    const int32_t want = static_cast<int32_t>(context.size());
    const int32_t ring_n = std::min(global_.tail_count(r.global_seq), want);
    int32_t size = ring_n;
    if (ring_n < want) {
      s.loci.resize(ring_n);  // placeholders: match_suffixes goes on from ring_n + 1
      global_.match_suffixes(context, s.loci);
      size = static_cast<int32_t>(s.loci.size());
    }
    list_view(s.loci, size, s);
    s.view.ring_seq = r.global_seq;
    s.view.ring_n = ring_n;
  } else if (is_tail) {
    update_loci(global_, own, r.gloci, s);
    list_view(r.gloci.loci, std::min(r.gloci.loci.size(), context.size()), s);
  } else {
    tail_matches(global_, context, s);
  }
}

}  // namespace arctic_core
