// The suffix decoding cache: one local suffix tree per active request and
// one global tree of cached responses. Requests are named by integer
// handles chosen by the caller.
//
// Without sharing, a local tree holds its request's prompt and response
// (updated token by token) and a response enters the global tree whole when
// its request stops. With sharing (share_active), a cached response grows in
// the global tree token by token while its request runs, so running requests
// draft from each other's output at once; the local tree then holds the
// prompt only (and the response too once the global tree no longer has it),
// so a request's own text counts once.
//
// Thread safety: every public method takes an internal mutex, so callers may
// release the GIL around any of them.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "arctic_core/suffix_tree.h"
#include "arctic_core/worker_pool.h"

namespace arctic_core {

struct SpecParams {
  int32_t max_spec_tokens = 64;
  double max_spec_factor = 1.0;
  double max_spec_offset = 0.0;
  double min_token_prob = 0.1;
  bool use_tree_spec = false;
};

// Throws InvalidArgument naming the offending field.
void validate(const SpecParams& p);

// Draft-length budget for a match of length m (never negative).
int32_t spec_budget(int32_t m, const SpecParams& p);

// Drafts of a batch, flattened: draft i is tokens [offsets[i], offsets[i+1]).
struct DraftBatch {
  std::vector<int32_t> token_ids;
  std::vector<int32_t> parents;
  std::vector<double> probs;
  std::vector<int64_t> offsets;
  std::vector<double> scores;
  std::vector<int32_t> match_lens;
};

class SuffixCache {
 public:
  // num_threads > 1 lets speculate_batch spread large batches over that
  // many threads (the caller's included).
  explicit SuffixCache(int32_t max_depth, int32_t num_threads = 1, bool share_active = false);

  int32_t max_depth() const { return max_depth_; }
  bool share_active() const { return share_; }
  int32_t num_threads() const { return pool_ ? pool_->threads() : 1; }

  // Start tracking a request. With cache_response its response goes to the
  // global tree when the request stops (and stays until evict_response).
  void start_request(int64_t handle, std::span<const int32_t> prompt, bool cache_response);
  void add_response(int64_t handle, std::span<const int32_t> tokens);
  // Free the request's local tree; a cached response enters the global tree.
  void stop_request(int64_t handle);
  // Remove the request's response from the global tree (or cancel its entry
  // if the request is still running).
  void evict_response(int64_t handle);

  // Best draft for an active request. `context` holds the tokens to continue
  // (only the last max_depth matter); `own_tail` uses the request's own last
  // tokens instead, as an engine does on every step.
  void speculate(int64_t handle, std::span<const int32_t> context, bool own_tail,
                 const SpecParams& params, Draft& out);

  // One engine step in one call: for each request i, append
  // new_tokens[new_offsets[i] : new_offsets[i+1]] to its response, then draft
  // from its own tail (contexts == nullptr) or from context i. With sharing,
  // every request's tokens are appended before the first draft.
  void speculate_batch(std::span<const int64_t> handles, std::span<const int32_t> new_tokens,
                       std::span<const int64_t> new_offsets, const int32_t* ctx_tokens,
                       const int64_t* ctx_offsets, const SpecParams& params, DraftBatch& out);

  size_t num_tokens();
  size_t memory_bytes();
  std::string check_integrity();

 private:
  // Loci in a tree of the suffixes of the request's own tokens [0, len),
  // valid while the tree is at generation gen.
  struct Loci {
    std::vector<Locus> loci;
    uint64_t gen = ~uint64_t{0};
    size_t len = 0;
  };

  // Loci of the own text's suffixes in a prompt-only local tree (one
  // sequence, static). Most long suffixes occur once in the prompt, and
  // those all end at one position (the one occurrence of the longest holds
  // the shorter ones): they are kept as a run, lengths [ulo, uhi] ending at
  // prompt index uend, which follows a new token by one compare. Only the
  // shorter suffixes, which occur more often, are kept as loci.
  struct PromptLoci {
    std::vector<Locus> loci;   // lengths 1 .. loci.size(), below the run
    int32_t ulo = 0, uhi = 0;  // uhi == 0: no run
    int32_t uend = -1;
    Locus ulong;  // locus of length uhi, when ulong_ok
    bool ulong_ok = false;
    uint64_t gen = ~uint64_t{0};
    size_t len = 0;
  };

  // The request's own text: prompt (local tree) then, with sharing, the
  // response growing in the global tree.
  struct OwnText {
    std::span<const int32_t> head, tail;
    size_t size() const { return head.size() + tail.size(); }
    int32_t operator[](size_t i) const { return i < head.size() ? head[i] : tail[i - head.size()]; }
  };

  struct Request {
    std::unique_ptr<SuffixTree> local;  // null once stopped
    bool cached = false;                // response belongs in the global tree
    bool local_response = true;         // the local tree holds the response
    int32_t global_seq = -1;            // its sequence there (growing with sharing)
    int32_t prompt_len = 0;
    Loci gloci;                 // in the global tree
    PromptLoci lloci;           // in the local tree, when it holds the prompt only
    bool global_first = false;  // the global draft won the last step
    // Previous position of the same token in the request's own text (-1:
    // none), and each token's last position: realignment looks up recent
    // occurrences of the context's last token.
    std::vector<int32_t> prev_same;
    std::unordered_map<int32_t, int32_t> last_pos;
  };

  // The loci of the context's suffixes in one tree, by match length
  // m = 1 .. size, read by best_draft only where it needs them (it mostly
  // stops after the longest few): up to ring_n, the newest active suffixes
  // of sequence ring_seq; up to list_end, list[m - 1]; the rest, a run
  // occurring once, suffixes of run_text located when drafted (the
  // longest is `top` when top_ok).
  struct LociView {
    int32_t ring_seq = -1, ring_n = 0, list_end = 0, size = 0;
    const Locus* list = nullptr;
    std::span<const int32_t> run_text;
    Locus top;
    bool top_ok = false;
  };

  // Reusable buffers of one drafting thread.
  struct Scratch {
    std::vector<int32_t> ctx, tmp;
    std::vector<Locus> loci;
    LociView view;
    Draft draft, local_best, global_best, realigned;
    std::vector<int32_t> cand, pair_from, pair_to;
  };

  using Requests = std::unordered_map<int64_t, Request>;

  Request& active(int64_t handle);
  void forget(Requests::iterator it);
  void speculate_locked(Request& r, std::span<const int32_t> context, bool own_tail,
                        const SpecParams& params, Draft& out, Scratch& s);
  void best_draft(const SuffixTree& tree, const SpecParams& params, Draft& best, Scratch& s,
                  double bar, bool ties_win);
  // s.view of the context's suffixes in the request's local tree, or in
  // the global one.
  void local_loci(Request& r, const OwnText& own, std::span<const int32_t> context, bool is_tail,
                  Scratch& s) const;
  void global_loci(Request& r, const OwnText& own, std::span<const int32_t> context, bool is_tail,
                   Scratch& s) const;
  OwnText own_text(const Request& r) const;
  void add_tokens(Request& r, std::span<const int32_t> tokens);
  static void index_own(Request& r, std::span<const int32_t> tokens);
  void realign(const Request& r, std::span<const int32_t> context, const SpecParams& p,
               Scratch& s) const;
  void update_loci(const SuffixTree& tree, const OwnText& own, Loci& st, Scratch& s) const;
  void update_prompt_loci(const SuffixTree& tree, const OwnText& own, PromptLoci& st,
                          Scratch& s) const;
  void prompt_loci_step(const SuffixTree& tree, std::span<const int32_t> prompt, int32_t t,
                        PromptLoci& st) const;
  void rebuild_prompt_loci(const SuffixTree& tree, const OwnText& own, PromptLoci& st,
                           int32_t floor, Scratch& s) const;
  static void prompt_loci_view(const SuffixTree& tree, PromptLoci& st, size_t want, Scratch& s);
  static int32_t shortest_with_count(const SuffixTree& tree, const LociView& v, int32_t m,
                                     int64_t occ);
  static int64_t view_entry(const SuffixTree& tree, const LociView& v, int32_t m, Locus& at);
  static void list_view(std::span<const Locus> list, size_t want, Scratch& s);
  void tail_matches(const SuffixTree& tree, std::span<const int32_t> context, Scratch& s) const;

  static constexpr int32_t kRealignWindow = 32;
  static constexpr int32_t kRealignCands = 16;
  static constexpr int32_t kRealignPairs = 3;

  int32_t max_depth_;
  bool share_;
  SuffixTree global_;
  Requests requests_;
  std::mutex mu_;
  std::unique_ptr<WorkerPool> pool_;
  std::vector<Scratch> scratch_;  // one per pool thread
  std::vector<Draft> batch_drafts_;
};

}  // namespace arctic_core
