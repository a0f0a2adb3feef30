#include "arctic_core/suffix_cache.h"

#include <algorithm>
#include <cmath>

#include "arctic_core/check.h"

namespace arctic_core {

void validate(const SpecParams& p) {
  ARCTIC_CHECK(p.max_spec_tokens >= 0, InvalidArgument, "max_spec_tokens must be >= 0, got ",
               p.max_spec_tokens);
  ARCTIC_CHECK(std::isfinite(p.max_spec_factor) && p.max_spec_factor >= 0.0, InvalidArgument,
               "max_spec_factor must be a finite number >= 0, got ", p.max_spec_factor);
  ARCTIC_CHECK(std::isfinite(p.max_spec_offset), InvalidArgument,
               "max_spec_offset must be a finite number, got ", p.max_spec_offset);
  ARCTIC_CHECK(p.min_token_prob >= 0.0 && p.min_token_prob <= 1.0, InvalidArgument,
               "min_token_prob must be within [0, 1], got ", p.min_token_prob);
}

int32_t spec_budget(int32_t m, const SpecParams& p) {
  // The epsilon keeps e.g. 3 * (1/3) from truncating to 0.
  const double b = static_cast<double>(m) * p.max_spec_factor + p.max_spec_offset + 1e-6;
  if (b >= static_cast<double>(p.max_spec_tokens)) return p.max_spec_tokens;
  if (b <= 0.0) return 0;
  return static_cast<int32_t>(b);
}

namespace {
void clear(Draft& d) {
  d.token_ids.clear();
  d.parents.clear();
  d.probs.clear();
  d.score = 0.0;
  d.match_len = 0;
}
}  // namespace

SuffixCache::SuffixCache(int32_t max_depth, int32_t num_threads, bool share_active)
    : max_depth_(max_depth), share_(share_active), global_(max_depth, CopyRule::kNewest) {
  ARCTIC_CHECK(num_threads >= 1 && num_threads <= 256, InvalidArgument,
               "num_threads must be within [1, 256], got ", num_threads);
  if (num_threads > 1) pool_ = std::make_unique<WorkerPool>(num_threads);
  scratch_.resize(num_threads);
}

SuffixCache::Request& SuffixCache::active(int64_t handle) {
  auto it = requests_.find(handle);
  ARCTIC_CHECK(it != requests_.end() && it->second.local, NotFound, "request handle ", handle,
               " is not active");
  return it->second;
}

void SuffixCache::start_request(int64_t handle, std::span<const int32_t> prompt,
                                bool cache_response) {
  std::lock_guard<std::mutex> lock(mu_);
  ARCTIC_CHECK(requests_.find(handle) == requests_.end(), InvalidArgument, "request handle ",
               handle, " is already in use");
  Request r;
  // The local tree of the request's own text copies the one continuing
  // occurrence past the depth limit: it is never shrunk, so its references
  // (the oldest occurrences) stay exact.
  r.local = std::make_unique<SuffixTree>(max_depth_, CopyRule::kUnique);
  r.local->add_sequence();
  r.local->extend(0, prompt);
  index_own(r, prompt);
  r.cached = cache_response;
  r.prompt_len = static_cast<int32_t>(prompt.size());
  if (share_ && cache_response) {
    r.global_seq = global_.add_sequence();  // the response grows there
    r.local_response = false;
  }
  requests_.emplace(handle, std::move(r));
}

void SuffixCache::add_tokens(Request& r, std::span<const int32_t> tokens) {
  if (r.local_response) {
    r.local->extend(0, tokens);
  } else {
    global_.extend(r.global_seq, tokens);
  }
  index_own(r, tokens);
}

void SuffixCache::index_own(Request& r, std::span<const int32_t> tokens) {
  for (const int32_t t : tokens) {
    const int32_t i = static_cast<int32_t>(r.prev_same.size());
    auto [it, fresh] = r.last_pos.try_emplace(t, i);
    r.prev_same.push_back(fresh ? -1 : it->second);
    it->second = i;
  }
}

void SuffixCache::realign(const Request& r, std::span<const int32_t> c, const SpecParams& p,
                          Scratch& s) const {
  // A draft from the own text that survives a few substituted tokens (a
  // diff's line prefixes, a renamed name) or one inserted token: among the
  // kRealignWindow latest occurrences of the context's last token that have
  // a next token, take those matching the longest context suffix (m
  // tokens, ended by a mismatch), at most kRealignCands of them. Before
  // each, either the mismatching tokens are a substitution (y -> x),
  // learning up to kRealignPairs such pairs while matching further back, or
  // the context's token is an insertion. The longest such match (L tokens,
  // at least m + 2) drafts what follows the occurrence, each token mapped
  // through the learned pairs, with probability 1 and budget L.
  clear(s.realigned);
  s.realigned.cut = false;
  const OwnText S = own_text(r);
  const int32_t n = static_cast<int32_t>(S.size());
  const int32_t cl = static_cast<int32_t>(c.size());
  if (cl < 2 || n < 2) return;
  auto it = r.last_pos.find(c[cl - 1]);
  if (it == r.last_pos.end()) return;
  // Candidates: latest first, with a next token; m_e matched backwards.
  s.cand.clear();
  int32_t best_m = 0;
  int32_t e = it->second;
  if (e == n - 1) e = r.prev_same[e];
  for (int32_t w = 0; e >= 0 && w < kRealignWindow; ++w, e = r.prev_same[e]) {
    int32_t m = 1;
    while (m < cl && e - m >= 0 && S[e - m] == c[cl - 1 - m]) ++m;
    if (m >= cl - 1) return;  // (nearly) the whole context matches: exact drafts
    if (m > best_m) {
      best_m = m;
      s.cand.clear();
    }
    if (m == best_m) s.cand.push_back(e);
  }
  const int32_t m = best_m;
  if (s.cand.empty() || static_cast<int32_t>(s.cand.size()) > kRealignCands) return;
  const int32_t x = c[cl - 1 - m];
  int32_t best_len = 0, best_e = -1, best_pairs = 0;
  for (const int32_t end : s.cand) {
    const int32_t q = end - m + 1;  // start of the matched suffix in S
    if (q < 1) continue;
    // Substitution y -> x, more pairs learned on the way back.
    int32_t pairs = 1;
    int32_t from[kRealignPairs], to[kRealignPairs];
    from[0] = S[q - 1];
    to[0] = x;
    int32_t i = cl - m - 2, j = q - 2, len = m + 1;
    for (; i >= 0 && j >= 0 && len < max_depth_; --i, --j, ++len) {
      const int32_t a = S[j], b = c[i];
      int32_t k = 0;
      while (k < pairs && from[k] != a) ++k;
      if (k < pairs) {
        if (to[k] != b) break;
        continue;
      }
      if (a == b) continue;
      if (pairs == kRealignPairs) break;
      bool taken = false;
      for (int32_t t = 0; t < pairs; ++t) taken = taken || to[t] == b;
      if (taken) break;
      from[pairs] = a;
      to[pairs] = b;
      ++pairs;
    }
    if (len > best_len) {
      best_len = len;
      best_e = end;
      best_pairs = pairs;
      s.pair_from.assign(from, from + pairs);
      s.pair_to.assign(to, to + pairs);
    }
    // Insertion: the context's token x is extra.
    i = cl - m - 2, j = q - 1, len = m;
    for (; i >= 0 && j >= 0 && len < max_depth_ && S[j] == c[i]; --i, --j) ++len;
    if (len > best_len) {
      best_len = len;
      best_e = end;
      best_pairs = 0;
    }
  }
  if (best_e < 0 || best_len < m + 2) return;
  const int32_t budget = spec_budget(best_len, p);
  Draft& d = s.realigned;
  for (int32_t i = best_e + 1; i < n && static_cast<int32_t>(d.token_ids.size()) < budget; ++i) {
    int32_t t = S[i];
    for (int32_t k = 0; k < best_pairs; ++k) {
      if (s.pair_from[k] == t) {
        t = s.pair_to[k];
        break;
      }
    }
    d.parents.push_back(static_cast<int32_t>(d.token_ids.size()) - 1);
    d.token_ids.push_back(t);
    d.probs.push_back(1.0);
    d.score += 1.0;
  }
  d.match_len = best_len;
}

void SuffixCache::add_response(int64_t handle, std::span<const int32_t> tokens) {
  std::lock_guard<std::mutex> lock(mu_);
  add_tokens(active(handle), tokens);
}

void SuffixCache::stop_request(int64_t handle) {
  std::lock_guard<std::mutex> lock(mu_);
  Request& r = active(handle);
  if (r.cached) {
    if (r.local_response) {
      r.global_seq = global_.insert_sequence(r.local->tokens(0).subspan(r.prompt_len));
    } else {
      global_.finish(r.global_seq);
    }
    // Only the cached response's sequence id stays.
    r.local.reset();
    std::vector<int32_t>().swap(r.prev_same);
    std::unordered_map<int32_t, int32_t>().swap(r.last_pos);
    r.gloci = Loci();
    r.lloci = PromptLoci();
  } else {
    forget(requests_.find(handle));
  }
}

void SuffixCache::evict_response(int64_t handle) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = requests_.find(handle);
  ARCTIC_CHECK(it != requests_.end() && it->second.cached, NotFound, "request handle ", handle,
               " has no cached response");
  Request& r = it->second;
  if (r.local && !r.local_response) {
    // Running with sharing: its response so far moves to its local tree.
    const std::span<const int32_t> resp = global_.tokens(r.global_seq);
    const std::vector<int32_t> copy(resp.begin(), resp.end());
    global_.remove_sequence(r.global_seq);
    r.local->extend(0, copy);
    r.local_response = true;
  } else if (r.global_seq >= 0) {
    global_.remove_sequence(r.global_seq);
  }
  r.global_seq = -1;
  r.cached = false;
  if (!r.local) forget(it);
}

void SuffixCache::forget(Requests::iterator it) {
  requests_.erase(it);
  // The bucket array never shrinks on erase: drop it with the last request.
  if (requests_.empty()) Requests().swap(requests_);
}

void SuffixCache::best_draft(const SuffixTree& tree, const SpecParams& p, Draft& best, Scratch& s,
                             double bar, bool ties_win) {
  // Evaluate match lengths (loci and occurrence counts in s.view) from
  // longest to shortest. A shorter match with the same occurrence count
  // continues the same occurrences with no larger budget, so it is skipped,
  // unless the longer draft stopped at max_depth short of its budget (the
  // shorter one can go one token further, and may copy from elsewhere). So
  // skipping is only a saving: a match whose count is unknown (-1) is
  // drafted.
  // A draft scores at most its budget, so once the budget cannot beat the
  // best score, or reach `bar` (the other tree's score: reaching it wins
  // with ties_win, else only exceeding it), shorter matches cannot either.
  clear(best);
  const LociView& v = s.view;
  bool have = false, last_cut = false;
  int64_t longer_occ = -1;
  // An unknown count (-1) never equals another: that match is drafted.
  for (int32_t m = v.size; m >= 1; --m) {
    const int32_t budget = spec_budget(m, p);
    const double b = budget;
    if ((have && b <= best.score) || (ties_win ? b < bar : b <= bar)) break;
    Locus at;
    const int64_t occ = view_entry(tree, v, m, at);
    const bool same = m < v.size && occ == longer_occ && occ >= 0;
    longer_occ = occ;
    if (same && !last_cut) {
      m = shortest_with_count(tree, v, m, occ);  // skip the whole run of them
      continue;
    }
    if (at.node == SuffixTree::kNil) at = tree.locate(v.run_text.last(m));
    tree.draft(at, budget, p.min_token_prob, p.use_tree_spec, s.draft);
    // A chain that filled its budget was not limited by the depth: past the
    // cut it copied with its probability held, which counting from a shorter
    // match of the same occurrences cannot beat (only lower it), so the
    // shorter ones stay skipped.
    last_cut =
        s.draft.cut && (p.use_tree_spec || static_cast<int32_t>(s.draft.token_ids.size()) < budget);
    if (!have || s.draft.score > best.score) {
      std::swap(best, s.draft);
      best.match_len = m;
      have = true;
    }
  }
}

int32_t SuffixCache::shortest_with_count(const SuffixTree& tree, const LociView& v, int32_t m,
                                         int64_t occ) {
  // Counts never grow with the match length, so the matches between two
  // with count `occ` have it too: gallop down from m, then bisect. Entries
  // reported unknown (-1) only end a run early (they are then drafted).
  Locus at;
  int32_t good = m, bad = 0, step = 1;
  while (good - step >= 1) {
    if (view_entry(tree, v, good - step, at) != occ) {
      bad = good - step;
      break;
    }
    good -= step;
    step *= 2;
  }
  while (good - bad > 1) {
    const int32_t mid = bad + (good - bad) / 2;
    (view_entry(tree, v, mid, at) == occ ? good : bad) = mid;
  }
  return good;
}

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
      const int32_t t = own[i];
      size_t kept = 0;
      // Suffix of length m becomes one of length m + 1: shift up by one.
      for (; kept < st.loci.size(); ++kept) {
        if (!tree.advance(st.loci[kept], t)) break;
      }
      st.loci.resize(kept);
      Locus one{SuffixTree::kRoot, 0, 0};
      if (tree.advance(one, t)) {
        st.loci.insert(st.loci.begin(), one);
      } else {
        st.loci.clear();  // t never occurs: no suffix of the context does
      }
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
  size_t kept = 0;
  for (; kept < st.loci.size(); ++kept) {
    if (!tree.advance(st.loci[kept], t)) break;
  }
  st.loci.resize(kept);
  Locus one{SuffixTree::kRoot, 0, 0};
  if (tree.advance(one, t)) {
    st.loci.insert(st.loci.begin(), one);
  } else {
    st.loci.clear();
  }
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

void SuffixCache::speculate_locked(Request& r, std::span<const int32_t> context, bool own_tail,
                                   const SpecParams& p, Draft& out, Scratch& s) {
  const OwnText own = own_text(r);
  if (own_tail) {
    const size_t m = std::min<size_t>(own.size(), max_depth_);
    s.ctx.resize(m);
    for (size_t i = 0; i < m; ++i) s.ctx[i] = own[own.size() - m + i];
    context = s.ctx;
  } else if (context.size() > static_cast<size_t>(max_depth_)) {
    context = context.subspan(context.size() - max_depth_);
  }
  // Engines pass the request's own last tokens; then the trees already
  // know where every suffix of the context is (active loci, or loci
  // followed from step to step).
  bool is_tail = own_tail;
  if (!is_tail && context.size() <= own.size()) {
    is_tail = true;
    for (size_t i = 0, base = own.size() - context.size(); i < context.size() && is_tail; ++i)
      is_tail = context[i] == own[base + i];
  }
  const int32_t max_budget =
      spec_budget(static_cast<int32_t>(std::min<size_t>(context.size(), max_depth_)), p);
  // The local draft wins ties. Either tree may be searched first; the
  // second search then drafts only matches whose budget could still win
  // (at least the first's score for the local tree, more for the global
  // one), and none when the first filled its budget and the second would
  // have to beat it. The tree that won the last step goes first: its
  // search often fills the budget and makes the other's nearly free.
  if (r.global_first) {
    global_loci(r, own, context, is_tail, s);
    best_draft(global_, p, s.global_best, s, 0.0, true);
    local_loci(r, own, context, is_tail, s);
    best_draft(*r.local, p, s.local_best, s, s.global_best.score, true);
  } else {
    local_loci(r, own, context, is_tail, s);
    best_draft(*r.local, p, s.local_best, s, 0.0, true);
    if (s.local_best.score >= static_cast<double>(max_budget)) {
      r.global_first = false;
      std::swap(out, s.local_best);
      return;
    }
    global_loci(r, own, context, is_tail, s);
    best_draft(global_, p, s.global_best, s, s.local_best.score, false);
  }
  r.global_first = s.global_best.score > s.local_best.score;
  Draft& best = r.global_first ? s.global_best : s.local_best;
  // A realigned draft scores at most its budget, max_budget at most.
  if (best.score < static_cast<double>(max_budget)) {
    realign(r, context, p, s);
    if (s.realigned.score > best.score) {
      std::swap(out, s.realigned);
      return;
    }
  }
  std::swap(out, best);
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

void SuffixCache::speculate(int64_t handle, std::span<const int32_t> context, bool own_tail,
                            const SpecParams& params, Draft& out) {
  validate(params);
  std::lock_guard<std::mutex> lock(mu_);
  speculate_locked(active(handle), context, own_tail, params, out, scratch_[0]);
}

void SuffixCache::speculate_batch(std::span<const int64_t> handles,
                                  std::span<const int32_t> new_tokens,
                                  std::span<const int64_t> new_offsets, const int32_t* ctx_tokens,
                                  const int64_t* ctx_offsets, const SpecParams& params,
                                  DraftBatch& out) {
  validate(params);
  const size_t n = handles.size();
  ARCTIC_CHECK(new_offsets.size() == n + 1, InvalidArgument,
               "new_offsets must have len(handles) + 1 entries");
  ARCTIC_CHECK(new_offsets[0] == 0 && new_offsets[n] == static_cast<int64_t>(new_tokens.size()),
               InvalidArgument, "new_offsets must start at 0 and end at len(new_tokens)");
  for (size_t i = 0; i < n; ++i) {
    ARCTIC_CHECK(new_offsets[i] <= new_offsets[i + 1], InvalidArgument,
                 "new_offsets must be non-decreasing");
    if (ctx_offsets) {
      ARCTIC_CHECK(ctx_offsets[i] <= ctx_offsets[i + 1], InvalidArgument,
                   "context offsets must be non-decreasing");
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  // Resolve every handle before changing anything: a bad id leaves no trace.
  std::vector<Request*> reqs(n);
  for (size_t i = 0; i < n; ++i) reqs[i] = &active(handles[i]);
  std::vector<int64_t> sorted(handles.begin(), handles.end());
  std::sort(sorted.begin(), sorted.end());
  const auto dup = std::adjacent_find(sorted.begin(), sorted.end());
  ARCTIC_CHECK(dup == sorted.end(), InvalidArgument, "request handle ",
               dup == sorted.end() ? 0 : *dup, " appears twice in one batch");

  // Requests are independent (own local trees; the global tree is only
  // read once the shared responses have grown), so large batches are spread
  // over the pool.
  auto new_of = [&](size_t i) {
    return new_tokens.subspan(new_offsets[i], new_offsets[i + 1] - new_offsets[i]);
  };
  for (size_t i = 0; i < n; ++i)
    if (!reqs[i]->local_response) add_tokens(*reqs[i], new_of(i));
  // Reused across calls: each step's drafts swap buffers with the scratch.
  std::vector<Draft>& drafts = batch_drafts_;
  drafts.resize(n);
  auto body = [&](size_t begin, size_t end, int worker) {
    for (size_t i = begin; i < end; ++i) {
      if (reqs[i]->local_response) add_tokens(*reqs[i], new_of(i));
      std::span<const int32_t> ctx;
      if (ctx_offsets) ctx = {ctx_tokens + ctx_offsets[i], ctx_tokens + ctx_offsets[i + 1]};
      speculate_locked(*reqs[i], ctx, ctx_offsets == nullptr, params, drafts[i], scratch_[worker]);
    }
  };
  if (pool_ && n >= 32) {
    pool_->parallel_for(n, 8, body);
  } else {
    body(0, n, 0);
  }
  out.token_ids.clear();
  out.parents.clear();
  out.probs.clear();
  out.offsets.assign(1, 0);
  out.scores.clear();
  out.match_lens.clear();
  for (const Draft& d : drafts) {
    out.token_ids.insert(out.token_ids.end(), d.token_ids.begin(), d.token_ids.end());
    out.parents.insert(out.parents.end(), d.parents.begin(), d.parents.end());
    out.probs.insert(out.probs.end(), d.probs.begin(), d.probs.end());
    out.offsets.push_back(static_cast<int64_t>(out.token_ids.size()));
    out.scores.push_back(d.score);
    out.match_lens.push_back(d.match_len);
  }
}

size_t SuffixCache::num_tokens() {
  std::lock_guard<std::mutex> lock(mu_);
  size_t total = global_.num_tokens();
  for (const auto& [h, r] : requests_)
    if (r.local) total += r.local->num_tokens();
  return total;
}

size_t SuffixCache::memory_bytes() {
  std::lock_guard<std::mutex> lock(mu_);
  size_t total = sizeof(*this) + global_.memory_bytes() + requests_.bucket_count() * sizeof(void*) +
                 requests_.size() * (sizeof(Request) + sizeof(int64_t) + 2 * sizeof(void*));
  for (const auto& [h, r] : requests_) {
    if (r.local) total += r.local->memory_bytes();
    total += r.prev_same.capacity() * sizeof(int32_t) + r.last_pos.bucket_count() * sizeof(void*) +
             r.last_pos.size() * (2 * sizeof(int32_t) + 2 * sizeof(void*)) +
             (r.gloci.loci.capacity() + r.lloci.loci.capacity()) * sizeof(Locus);
  }
  return total;
}

std::string SuffixCache::check_integrity() {
  std::lock_guard<std::mutex> lock(mu_);
  std::string err = global_.check_integrity();
  if (!err.empty()) return "global tree: " + err;
  for (const auto& [h, r] : requests_) {
    if (!r.local) continue;
    err = r.local->check_integrity();
    if (!err.empty()) return "local tree of handle " + std::to_string(h) + ": " + err;
  }
  return "";
}

}  // namespace arctic_core
