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
  best.reset();
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
