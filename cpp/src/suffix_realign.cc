// SuffixCache's realigned drafts: the request's own text matched past a few
// substituted tokens or one inserted token.
#include <algorithm>

#include "arctic_core/check.h"
#include "arctic_core/suffix_cache.h"

namespace arctic_core {

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
  s.realigned.reset();
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

}  // namespace arctic_core
