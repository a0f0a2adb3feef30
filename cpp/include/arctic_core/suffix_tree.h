// Depth-limited generalized suffix tree over int32 token sequences.
//
// Every suffix of every sequence, truncated to `max_depth` tokens, is a path
// from the root. Edges are path-compressed: a node stores a reference
// (sequence, index) to an occurrence of its edge tokens instead of the
// tokens. `count` of a node is the number of suffixes whose path has entered
// its edge; from counts (and `pend`, below) the number of occurrences of any
// string up to `max_depth` tokens follows exactly. Those are the frequency
// statistics suffix decoding drafts from.
//
// Two ways to grow a tree:
// - append(): a sequence grows token by token and its last `max_depth`
//   suffixes are tracked live (the "active" suffixes). An active suffix may
//   rest inside an edge (it is then "pending" there), so following text that
//   occurred before costs one token compare per active suffix, with no node
//   splitting. `pend` counts the pending suffixes inside a node's edge.
//   Several sequences may grow at once (the shared tree of running
//   requests); finish() stops one, so its suffixes end at node ends.
// - insert_sequence(): a complete sequence is added with one root walk per
//   suffix.
// Any sequence can be removed, growing or not.
//
// Invariants (checked by check_integrity()):
// - a node's reference points at an occurrence of its whole path string, so
//   the tokens after it are a real continuation. CopyRule::kUnique trees
//   (a request's own text) keep the oldest occurrence. kNewest trees (the
//   shared tree) re-point a node to each suffix that passes it, so removing
//   sequences oldest first frees each one's tokens; a node ending at
//   max_depth is re-pointed only once its occurrence is final (its next
//   token exists, or its sequence was finished), so its reference is the
//   occurrence that became final last;
// - suffixes that stopped growing end at node ends, never inside an edge;
// - in trees never grown by append(), no node has a single child with the
//   same count (canonical form).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "arctic_core/edge_map.h"

namespace arctic_core {

// A position in the tree: `offset` tokens of `node`'s edge consumed, `depth`
// tokens from the root in total.
struct Locus {
  uint32_t node = 0;
  int32_t offset = 0;
  int32_t depth = 0;
};

// A speculated continuation: a chain (path mode) or a tree (tree mode).
struct Draft {
  std::vector<int32_t> token_ids;
  std::vector<int32_t> parents;  // index of the parent token, -1 for roots
  std::vector<double> probs;     // estimated probability of each token
  double score = 0.0;            // sum of probs
  int32_t match_len = 0;         // context tokens matched to produce it
  bool cut = false;              // reached max_depth (copied past it, or stopped)

  // Empty, keeping the buffers.
  void reset() {
    token_ids.clear();
    parents.clear();
    probs.clear();
    score = 0.0;
    match_len = 0;
    cut = false;
  }
};

// What drafting does at max_depth, where the counts end.
enum class CopyRule : uint8_t {
  kNone,    // stop
  kUnique,  // copy the one occurrence that continues, if exactly one does
            // (single-sequence append-only trees: references are the oldest)
  kNewest,  // copy the continuation of the occurrence that became final
            // last, if its sequence is still there (references: newest)
};

class SuffixTree {
 public:
  static constexpr uint32_t kNil = EdgeMap::kNone;
  static constexpr uint32_t kRoot = 0;
  static constexpr int32_t kMaxDepth = 4096;  // edge lengths fit 13 bits

  // copy: what drafting does at max_depth (see CopyRule). kUnique only for
  // an append-only tree holding a single sequence (a request's own text).
  SuffixTree(int32_t max_depth, CopyRule copy);

  int32_t max_depth() const { return max_depth_; }

  // Token-by-token growth.
  int32_t add_sequence();
  void append(int32_t seq_id, int32_t token);
  void extend(int32_t seq_id, std::span<const int32_t> tokens);
  // Stop a growing sequence: its pending suffixes get node ends, its
  // occurrences become final (kNewest references) and it cannot grow again.
  void finish(int32_t seq_id);

  // Whole-sequence growth, and removal of any sequence.
  int32_t insert_sequence(std::span<const int32_t> tokens);
  void remove_sequence(int32_t seq_id);

  bool has_sequence(int32_t seq_id) const;
  std::span<const int32_t> tokens(int32_t seq_id) const;

  // Loci of a growing sequence's own last suffixes: out[m-1] is the locus of
  // its last m tokens, for m = 1 .. min(length, max_depth); occ[m-1] is the
  // number of occurrences of those tokens.
  void tail_loci(int32_t seq_id, std::vector<Locus>& out, std::vector<int64_t>& occ) const;
  // One of them: the locus of the last m tokens (1 <= m <= tail_count), and
  // in `occ` their occurrences (-1 when that is not cheap to tell).
  Locus tail_locus(int32_t seq_id, int32_t m, int64_t& occ) const;
  int32_t tail_count(int32_t seq_id) const { return live_seq(seq_id).ring_size; }
  // Loci of the suffixes of `context`: out[m-1] for m = 1 .. M where M is
  // the longest suffix (at most max_depth) that occurs in the tree. Entries
  // already in `out` are taken as the loci of the shorter suffixes.
  void match_suffixes(std::span<const int32_t> context, std::vector<Locus>& out) const;
  // Locus of the longest suffix of `context` (at most max_depth) that
  // occurs; depth 0 (the root) when none does.
  Locus longest_match(std::span<const int32_t> context) const;
  // Locus of `str` in `out`, if it occurs (at most max_depth tokens).
  bool find(std::span<const int32_t> str, Locus& out) const {
    return walk(str.data(), static_cast<int32_t>(str.size()), out);
  }
  // Locus of a string known to occur (at most max_depth tokens): whole
  // edges are skipped without comparing. Throws InternalError if it does
  // not occur.
  Locus locate(std::span<const int32_t> str) const;
  // Index, in the reference sequence of l's node, of the last token of one
  // occurrence of the string at l: in a single-sequence tree where the
  // string occurs once, where that occurrence ends.
  int32_t occurrence_end(const Locus& l) const { return nodes_[l.node].ref_idx + l.offset - 1; }

  // Move `l` one token further along `token`; false if the string never
  // continues that way (or is already max_depth long).
  bool advance(Locus& l, int32_t token) const;
  // Bumped by every change that may move loci or make a longer match occur
  // (insert, remove, and appends to a tree with several growing sequences):
  // loci computed before a change may be stale.
  uint64_t generation() const { return generation_; }

  // Number of occurrences of the string ending at `l`.
  int64_t occurrences(const Locus& l) const;
  // The same when it is cheap (no other active suffix may stop inside the
  // edge before `l`), else -1.
  int64_t cheap_occurrences(const Locus& l) const;

  // Draft at most `budget` tokens continuing the string at `at`.
  void draft(const Locus& at, int32_t budget, double min_token_prob, bool tree_mode,
             Draft& out) const;

  size_t num_tokens() const { return num_tokens_; }
  size_t memory_bytes() const;
  // Empty string when every invariant holds, else a description of the first
  // violation. Walks the whole tree: for tests only.
  std::string check_integrity() const;

 private:
  // 36 bytes: the tree's memory is mostly nodes.
  struct Node {
    int32_t count = 0;         // suffixes that entered this edge
    uint32_t length : 13 = 0;  // edge length in tokens (<= kMaxDepth)
    uint32_t mapped : 1 = 0;   // children are in the edge map (else: walk the list)
    uint32_t pend : 18 = 0;    // active suffixes resting strictly inside the edge
    int32_t ref_seq = -1;
    int32_t ref_idx = 0;  // start of the edge tokens in ref_seq
    int32_t token = 0;    // first edge token (the key in the parent)
    uint32_t parent = kNil;
    uint32_t first_child = kNil;
    uint32_t next_sibling = kNil;
    uint32_t prev_sibling = kNil;
  };

  // An active suffix: `off` tokens into `node`'s edge while pending inside
  // it, kEnd at its end. So a suffix at an end stays there when the edge
  // is split or grows (a leaf followed by others' pending suffixes).
  static constexpr int32_t kEnd = -1;
  struct Active {
    uint32_t node;
    int32_t off;
  };

  struct Sequence {
    std::vector<int32_t> tokens;
    // Active suffixes, oldest (longest) first, in a ring of max_depth slots.
    std::vector<Active> ring;
    int32_t ring_start = 0;
    int32_t ring_size = 0;
    bool live = true;  // false once removed; tokens kept while nodes refer to them
  };

  int32_t tok(int32_t seq, int32_t idx) const { return seqs_[seq]->tokens[idx]; }
  const Sequence& live_seq(int32_t seq_id) const;
  Active& ring_at(Sequence& s, int32_t k) { return s.ring[(s.ring_start + k) % max_depth_]; }

  // Children beyond this many go into the edge map (one hash lookup);
  // fewer are found by walking the sibling list.
  static constexpr int32_t kMapAt = 6;
  uint32_t child(uint32_t v, int32_t token) const {
    const Node& n = nodes_[v];
    if (n.mapped) return edges_.find(v, token);
    uint32_t c = n.first_child;
    while (c != kNil && nodes_[c].token != token) c = nodes_[c].next_sibling;
    return c;
  }
  uint32_t new_node(uint32_t parent, int32_t token, int32_t count, int32_t length, int32_t ref_seq,
                    int32_t ref_idx);
  void free_node(uint32_t id);
  void free_subtree(uint32_t id);
  void set_ref(Node& n, int32_t seq, int32_t idx);
  void link_child(uint32_t parent, uint32_t child);
  void unlink_child(uint32_t child);
  void release_seq_ref(int32_t seq);
  void release_storage();
  uint32_t split(uint32_t child, int32_t keep, Active* self);
  void stop_growing(int32_t seq_id);
  void trim(uint32_t x);
  void absorb_parent(uint32_t c, Active* self);
  uint32_t best_child(uint32_t node, int64_t& total) const;
  int32_t copy_start(uint32_t node) const;
  bool walk(const int32_t* s, int32_t n, Locus& l) const;

  void draft_path(Locus at, int32_t budget, double min_prob, Draft& out) const;
  void draft_tree(Locus at, int32_t budget, double min_prob, Draft& out) const;

  int32_t max_depth_;
  CopyRule copy_;
  std::vector<Node> nodes_;
  std::vector<uint32_t> free_nodes_;
  EdgeMap edges_;
  std::vector<std::unique_ptr<Sequence>> seqs_;
  // Nodes referencing each sequence's tokens, flat beside seqs_ so that
  // moving a reference touches no Sequence.
  std::vector<int32_t> seq_refs_;
  // Sequences with active suffixes (growing): splits relocate theirs.
  std::vector<int32_t> growing_;
  size_t num_tokens_ = 0;  // tokens of live sequences
  uint64_t generation_ = 0;
  bool appended_ = false;  // ever grown by append(): not canonical
};

// Inline: followed for every locus and every new token.
inline bool SuffixTree::advance(Locus& l, int32_t token) const {
  if (l.depth >= max_depth_) return false;
  const Node& x = nodes_[l.node];
  if (l.offset < x.length) {
    if (tok(x.ref_seq, x.ref_idx + l.offset) != token) return false;
    ++l.offset;
  } else {
    const uint32_t c = child(l.node, token);
    if (c == kNil) return false;
    l.node = c;
    l.offset = 1;
  }
  ++l.depth;
  return true;
}

}  // namespace arctic_core
