#include "arctic_core/suffix_tree.h"

#include <algorithm>
#include <queue>
#include <unordered_map>

#include "arctic_core/check.h"

namespace arctic_core {

SuffixTree::SuffixTree(int32_t max_depth, bool allow_copy)
    : max_depth_(max_depth), allow_copy_(allow_copy) {
  ARCTIC_CHECK(max_depth >= 1, InvalidArgument, "max_depth must be >= 1, got ", max_depth);
  nodes_.emplace_back();  // the root: count = number of suffixes, no edge
}

// ---------------------------------------------------------------- sequences

int32_t SuffixTree::add_sequence() {
  for (size_t i = 0; i < seqs_.size(); ++i) {
    if (!seqs_[i]) {
      seqs_[i] = std::make_unique<Sequence>();
      return static_cast<int32_t>(i);
    }
  }
  ARCTIC_CHECK(seqs_.size() < 0x7FFFFFFF, InvalidArgument, "too many sequences");
  seqs_.push_back(std::make_unique<Sequence>());
  return static_cast<int32_t>(seqs_.size() - 1);
}

bool SuffixTree::has_sequence(int32_t seq_id) const {
  return seq_id >= 0 && static_cast<size_t>(seq_id) < seqs_.size() && seqs_[seq_id] &&
         seqs_[seq_id]->live;
}

SuffixTree::Sequence& SuffixTree::live_seq(int32_t seq_id) {
  ARCTIC_CHECK(has_sequence(seq_id), NotFound, "unknown sequence id ", seq_id);
  return *seqs_[seq_id];
}

const SuffixTree::Sequence& SuffixTree::live_seq(int32_t seq_id) const {
  ARCTIC_CHECK(has_sequence(seq_id), NotFound, "unknown sequence id ", seq_id);
  return *seqs_[seq_id];
}

std::span<const int32_t> SuffixTree::tokens(int32_t seq_id) const {
  return live_seq(seq_id).tokens;
}

void SuffixTree::close_sequence(int32_t seq_id) {
  Sequence& s = live_seq(seq_id);
  std::vector<uint32_t>().swap(s.ring);
  s.ring_start = s.ring_size = 0;
  s.tokens.shrink_to_fit();
}

// ---------------------------------------------------------------- node pool

uint32_t SuffixTree::new_node(uint32_t parent, int32_t token, int32_t count, int32_t length,
                              int32_t ref_seq, int32_t ref_idx) {
  uint32_t id;
  if (!free_nodes_.empty()) {
    id = free_nodes_.back();
    free_nodes_.pop_back();
    nodes_[id] = Node{};
  } else {
    ARCTIC_CHECK(nodes_.size() < kNil - 1, InvalidArgument, "suffix tree is full");
    id = static_cast<uint32_t>(nodes_.size());
    nodes_.emplace_back();
  }
  Node& n = nodes_[id];
  n.count = count;
  n.length = length;
  n.token = token;
  n.ref_seq = ref_seq;
  n.ref_idx = ref_idx;
  seqs_[ref_seq]->refs++;
  link_child(parent, id);
  return id;
}

void SuffixTree::release_seq_ref(int32_t seq) {
  Sequence& s = *seqs_[seq];
  if (--s.refs == 0 && !s.live) seqs_[seq].reset();
}

void SuffixTree::set_ref(Node& n, int32_t seq, int32_t idx) {
  if (n.ref_seq != seq) {
    seqs_[seq]->refs++;
    release_seq_ref(n.ref_seq);
    n.ref_seq = seq;
  }
  n.ref_idx = idx;
}

void SuffixTree::free_node(uint32_t id) {
  Node& n = nodes_[id];
  release_seq_ref(n.ref_seq);
  n.ref_seq = -1;
  n.count = 0;
  free_nodes_.push_back(id);
}

void SuffixTree::free_subtree(uint32_t id) {
  std::vector<uint32_t> stack{id};
  while (!stack.empty()) {
    const uint32_t v = stack.back();
    stack.pop_back();
    for (uint32_t c = nodes_[v].first_child; c != kNil; c = nodes_[c].next_sibling) {
      edges_.erase(v, nodes_[c].token);
      stack.push_back(c);
    }
    free_node(v);
  }
}

void SuffixTree::link_child(uint32_t parent, uint32_t child) {
  Node& c = nodes_[child];
  Node& p = nodes_[parent];
  c.parent = parent;
  c.prev_sibling = kNil;
  c.next_sibling = p.first_child;
  if (p.first_child != kNil) nodes_[p.first_child].prev_sibling = child;
  p.first_child = child;
  edges_.put(parent, c.token, child);
}

void SuffixTree::unlink_child(uint32_t child) {
  Node& c = nodes_[child];
  Node& p = nodes_[c.parent];
  if (c.prev_sibling != kNil) {
    nodes_[c.prev_sibling].next_sibling = c.next_sibling;
  } else {
    p.first_child = c.next_sibling;
  }
  if (c.next_sibling != kNil) nodes_[c.next_sibling].prev_sibling = c.prev_sibling;
  edges_.erase(c.parent, c.token);
  c.parent = c.next_sibling = c.prev_sibling = kNil;
}

// ---------------------------------------------------------------- append

void SuffixTree::extend(int32_t seq_id, std::span<const int32_t> tokens) {
  for (int32_t t : tokens) append(seq_id, t);
}

void SuffixTree::append(int32_t seq_id, int32_t token) {
  Sequence& s = live_seq(seq_id);
  ARCTIC_CHECK(s.tokens.size() < 0x7FFFFFFF, InvalidArgument, "sequence too long");
  ARCTIC_CHECK(s.tokens.empty() || !s.ring.empty(), InvalidArgument,
               "sequence ", seq_id, " is closed");
  if (s.ring.empty()) s.ring.assign(max_depth_, kNil);

  // A new suffix starts at the root; a suffix already max_depth long stops.
  if (s.ring_size == max_depth_) {
    s.ring_start = (s.ring_start + 1) % max_depth_;
    --s.ring_size;
  }
  s.ring[(s.ring_start + s.ring_size) % max_depth_] = kRoot;
  ++s.ring_size;
  nodes_[kRoot].count++;

  const int32_t pos = static_cast<int32_t>(s.tokens.size());  // index of `token`
  s.tokens.push_back(token);
  ++num_tokens_;

  for (int32_t k = 0; k < s.ring_size; ++k) {
    uint32_t& slot = s.ring[(s.ring_start + k) % max_depth_];
    const uint32_t v = slot;
    const uint32_t c = edges_.find(v, token);
    Node& vn = nodes_[v];
    if (c == kNil) {
      if (v != kRoot && vn.count == 1 && vn.first_child == kNil) {
        // Only this suffix ends here and nothing hangs below: grow the edge.
        vn.length++;
        set_ref(vn, seq_id, pos + 1 - vn.length);
      } else {
        slot = new_node(v, token, 1, 1, seq_id, pos);
      }
      continue;
    }
    Node& cn = nodes_[c];
    if (v != kRoot && vn.count == cn.count + 1) {
      // This suffix is the only one ending at v, and every other suffix
      // through v continues into c: extending would leave v with one child
      // of equal count, so merge instead of splitting.
      if (cn.length == 1) {
        // c takes v's place with v's edge plus its one token.
        const uint32_t parent = vn.parent;
        const int32_t vtoken = vn.token;
        const int32_t vlen = vn.length;
        unlink_child(c);
        unlink_child(v);
        free_node(v);
        Node& cc = nodes_[c];
        cc.token = vtoken;
        cc.count += 1;
        cc.length = vlen + 1;
        cc.ref_idx -= vlen;  // c's occurrence also covers v's edge
        link_child(parent, c);
        slot = c;
      } else {
        // v absorbs the first token of c's edge.
        unlink_child(c);
        Node& cc = nodes_[c];
        set_ref(vn, cc.ref_seq, cc.ref_idx - vn.length);  // c's occurrence is older
        vn.length++;
        cc.length--;
        cc.ref_idx++;
        cc.token = tok(cc.ref_seq, cc.ref_idx);
        link_child(v, c);
      }
      continue;
    }
    if (cn.length == 1) {
      cn.count++;
      slot = c;
    } else {
      // Split c after its first token.
      const int32_t ccount = cn.count, cseq = cn.ref_seq, cidx = cn.ref_idx;
      unlink_child(c);
      const uint32_t u = new_node(v, token, ccount + 1, 1, cseq, cidx);
      Node& cc = nodes_[c];
      cc.length--;
      cc.ref_idx++;
      cc.token = tok(cc.ref_seq, cc.ref_idx);
      link_child(u, c);
      slot = u;
    }
  }
}

// ---------------------------------------------------------------- removal

void SuffixTree::remove_sequence(int32_t seq_id) {
  Sequence& s = live_seq(seq_id);
  const std::vector<int32_t>& seq = s.tokens;
  const int32_t n = static_cast<int32_t>(seq.size());
  for (int32_t start = 0; start < n; ++start) {
    const int32_t end = std::min(n, start + max_depth_);
    uint32_t v = kRoot;
    nodes_[kRoot].count--;
    int32_t idx = start;
    while (idx < end) {
      const uint32_t c = edges_.find(v, seq[idx]);
      ARCTIC_CHECK(c != kNil, InternalError, "suffix path missing during removal");
      Node& cn = nodes_[c];
      if (--cn.count == 0) {
        // Only this suffix went through c: drop c and everything below.
        unlink_child(c);
        free_subtree(c);
        break;
      }
      idx += cn.length;
      v = c;
    }
    // This suffix ended at v (or its only branch was cut there): v may now
    // have a single child with the same count, which must be merged.
    Node& vn = nodes_[v];
    if (v != kRoot && vn.first_child != kNil && nodes_[vn.first_child].next_sibling == kNil &&
        nodes_[vn.first_child].count == vn.count) {
      const uint32_t c = vn.first_child;
      const uint32_t parent = vn.parent;
      const int32_t vtoken = vn.token;
      const int32_t vlen = vn.length;
      unlink_child(c);
      unlink_child(v);
      free_node(v);
      Node& cc = nodes_[c];
      cc.token = vtoken;
      cc.length += vlen;
      cc.ref_idx -= vlen;
      link_child(parent, c);
    }
  }
  num_tokens_ -= seq.size();
  std::vector<uint32_t>().swap(s.ring);
  s.live = false;
  if (s.refs == 0) {
    seqs_[seq_id].reset();
  } else {
    s.tokens.shrink_to_fit();  // kept: nodes still read their edges from it
  }
}

// ---------------------------------------------------------------- matching

bool SuffixTree::walk(const int32_t* s, int32_t n, Locus& l) const {
  uint32_t v = kRoot;
  int32_t off = 0;
  for (int32_t i = 0; i < n; ++i) {
    if (off == nodes_[v].length) {
      const uint32_t c = edges_.find(v, s[i]);
      if (c == kNil) return false;
      v = c;
      off = 1;
      continue;
    }
    const Node& vn = nodes_[v];
    if (tok(vn.ref_seq, vn.ref_idx + off) != s[i]) return false;
    ++off;
  }
  l.node = v;
  l.offset = off;
  l.depth = n;
  return true;
}

void SuffixTree::match_suffixes(std::span<const int32_t> context, std::vector<Locus>& out) const {
  const int32_t L = static_cast<int32_t>(context.size());
  const int32_t max_m = std::min(L, max_depth_);
  Locus l;
  // Occurrence is monotone in m: once a suffix is missing, longer ones are too.
  for (int32_t m = static_cast<int32_t>(out.size()) + 1; m <= max_m; ++m) {
    if (!walk(context.data() + (L - m), m, l)) break;
    out.push_back(l);
  }
}

void SuffixTree::tail_loci(int32_t seq_id, std::vector<Locus>& out) const {
  const Sequence& s = live_seq(seq_id);
  out.clear();
  for (int32_t m = 1; m <= s.ring_size; ++m) {
    const uint32_t v = s.ring[(s.ring_start + s.ring_size - m) % max_depth_];
    out.push_back(Locus{v, nodes_[v].length, m});
  }
}

// ---------------------------------------------------------------- drafting

uint32_t SuffixTree::best_child(uint32_t v, int64_t& total) const {
  // Most frequent continuation; ties go to the smallest token id. `total` is
  // the number of occurrences that continue at all (suffixes ending here,
  // such as the request's own latest tokens, do not count against a token).
  uint32_t best = kNil;
  total = 0;
  for (uint32_t c = nodes_[v].first_child; c != kNil; c = nodes_[c].next_sibling) {
    total += nodes_[c].count;
    if (best == kNil || nodes_[c].count > nodes_[best].count ||
        (nodes_[c].count == nodes_[best].count && nodes_[c].token < nodes_[best].token)) {
      best = c;
    }
  }
  return best;
}

int32_t SuffixTree::copy_start(uint32_t v) const {
  // Called at max_depth, where counts end. Copy only when exactly one
  // occurrence continues: the node's reference is its oldest occurrence, and
  // the other one (if count is 2) must be the sequence's own tail, which has
  // no continuation.
  const Node& vn = nodes_[v];
  if (!allow_copy_ || vn.count > 2) return -1;
  const std::vector<int32_t>& seq = seqs_[vn.ref_seq]->tokens;
  const int32_t end = vn.ref_idx + vn.length;
  const int32_t n = static_cast<int32_t>(seq.size());
  if (end >= n) return -1;
  if (vn.count == 2 &&
      !std::equal(seq.begin() + (end - max_depth_), seq.begin() + end, seq.end() - max_depth_)) {
    return -1;
  }
  return end;
}

void SuffixTree::draft(const Locus& at, int32_t budget, double min_token_prob, bool tree_mode,
                       Draft& out) const {
  out.token_ids.clear();
  out.parents.clear();
  out.probs.clear();
  out.score = 0.0;
  if (budget <= 0) return;
  if (tree_mode) {
    draft_tree(at, budget, min_token_prob, out);
  } else {
    draft_path(at, budget, min_token_prob, out);
  }
}

void SuffixTree::draft_path(Locus at, int32_t budget, double min_prob, Draft& out) const {
  uint32_t v = at.node;
  int32_t off = at.offset;
  int32_t depth = at.depth;
  double p = 1.0;
  auto push = [&](int32_t t) {
    out.parents.push_back(static_cast<int32_t>(out.token_ids.size()) - 1);
    out.token_ids.push_back(t);
    out.probs.push_back(p);
    out.score += p;
  };
  while (static_cast<int32_t>(out.token_ids.size()) < budget) {
    const Node& vn = nodes_[v];
    if (off < vn.length) {
      push(tok(vn.ref_seq, vn.ref_idx + off));
      ++off;
      ++depth;
    } else if (depth < max_depth_) {
      int64_t total;
      const uint32_t c = best_child(v, total);
      if (c == kNil) break;
      p = p * (static_cast<double>(nodes_[c].count) / static_cast<double>(total));
      if (p < min_prob) break;
      v = c;
      off = 0;
    } else {
      // Past the depth limit the counts end. If exactly one occurrence
      // continues, its continuation is the rest of that sequence: copy it.
      const int32_t start = copy_start(v);
      if (start < 0) break;
      const std::vector<int32_t>& seq = seqs_[vn.ref_seq]->tokens;
      for (size_t i = start;
           i < seq.size() && static_cast<int32_t>(out.token_ids.size()) < budget; ++i) {
        push(seq[i]);
      }
      break;
    }
  }
}

namespace {
struct TreeItem {
  double prob;
  int64_t order;      // insertion order: ties pop oldest first
  uint32_t node;      // kNil marks a copy item (`off` indexes `seq`)
  int32_t off;        // edge offset, or position for copy items
  int32_t depth;
  int32_t parent;
  int32_t seq;        // sequence read by copy items
  bool operator<(const TreeItem& o) const {
    if (prob != o.prob) return prob < o.prob;
    return order > o.order;
  }
};
}  // namespace

void SuffixTree::draft_tree(Locus at, int32_t budget, double min_prob, Draft& out) const {
  std::priority_queue<TreeItem> heap;
  int64_t order = 0;
  heap.push(TreeItem{1.0, order++, at.node, at.offset, at.depth, -1, -1});
  std::vector<uint32_t> kids;
  while (static_cast<int32_t>(out.token_ids.size()) < budget && !heap.empty()) {
    const TreeItem it = heap.top();
    heap.pop();
    auto emit = [&](int32_t t) {
      out.token_ids.push_back(t);
      out.parents.push_back(it.parent);
      out.probs.push_back(it.prob);
      out.score += it.prob;
      return static_cast<int32_t>(out.token_ids.size()) - 1;
    };
    if (it.node == kNil) {  // copying the unique occurrence
      const std::vector<int32_t>& seq = seqs_[it.seq]->tokens;
      if (static_cast<size_t>(it.off) >= seq.size()) continue;
      const int32_t me = emit(seq[it.off]);
      heap.push(TreeItem{it.prob, order++, kNil, it.off + 1, it.depth + 1, me, it.seq});
      continue;
    }
    const Node& vn = nodes_[it.node];
    if (it.off < vn.length) {
      const int32_t me = emit(tok(vn.ref_seq, vn.ref_idx + it.off));
      heap.push(TreeItem{it.prob, order++, it.node, it.off + 1, it.depth + 1, me, -1});
    } else if (it.depth < max_depth_) {
      // Expand children, most frequent first (ties: smallest token).
      kids.clear();
      int64_t total = 0;
      for (uint32_t c = vn.first_child; c != kNil; c = nodes_[c].next_sibling) {
        kids.push_back(c);
        total += nodes_[c].count;
      }
      std::sort(kids.begin(), kids.end(), [&](uint32_t a, uint32_t b) {
        if (nodes_[a].count != nodes_[b].count) return nodes_[a].count > nodes_[b].count;
        return nodes_[a].token < nodes_[b].token;
      });
      for (uint32_t c : kids) {
        const double cp =
            it.prob * (static_cast<double>(nodes_[c].count) / static_cast<double>(total));
        if (cp >= min_prob) heap.push(TreeItem{cp, order++, c, 0, it.depth, it.parent, -1});
      }
    } else if (const int32_t start = copy_start(it.node); start >= 0) {
      heap.push(TreeItem{it.prob, order++, kNil, start, it.depth, it.parent, vn.ref_seq});
    }
  }
}

// ---------------------------------------------------------------- accounting

size_t SuffixTree::memory_bytes() const {
  size_t total = sizeof(*this) + nodes_.capacity() * sizeof(Node) +
                 free_nodes_.capacity() * sizeof(uint32_t) + edges_.memory_bytes() +
                 seqs_.capacity() * sizeof(std::unique_ptr<Sequence>);
  for (const auto& s : seqs_) {
    if (!s) continue;
    total += sizeof(Sequence) + s->tokens.capacity() * sizeof(int32_t) +
             s->ring.capacity() * sizeof(uint32_t);
  }
  return total;
}

std::string SuffixTree::check_integrity() const {
  // Structure: parent/child links, edge keys, counts, canonical form.
  std::vector<uint32_t> stack{kRoot};
  std::unordered_map<uint32_t, int64_t> visits;
  std::unordered_map<uint32_t, int32_t> depth_of;
  depth_of[kRoot] = 0;
  while (!stack.empty()) {
    const uint32_t v = stack.back();
    stack.pop_back();
    const Node& vn = nodes_[v];
    int64_t child_sum = 0;
    int32_t kids = 0;
    for (uint32_t c = vn.first_child; c != kNil; c = nodes_[c].next_sibling) {
      const Node& cn = nodes_[c];
      ++kids;
      if (cn.parent != v) return "child has wrong parent";
      if (edges_.find(v, cn.token) != c) return "edge map disagrees with child list";
      if (cn.length <= 0) return "non-positive edge length";
      if (cn.count <= 0) return "non-positive count";
      if (v != kRoot && cn.count >= vn.count) return "child count not below parent count";
      if (cn.ref_seq < 0 || !seqs_[cn.ref_seq]) return "dangling reference";
      const auto& ref = seqs_[cn.ref_seq]->tokens;
      const int32_t d = depth_of[v] + cn.length;
      if (d > max_depth_) return "path deeper than max_depth";
      if (cn.ref_idx - depth_of[v] < 0 || cn.ref_idx + cn.length > static_cast<int32_t>(ref.size()))
        return "reference out of range";
      if (ref[cn.ref_idx] != cn.token) return "edge key is not the first edge token";
      // The reference is an occurrence of the whole path: compare ancestors.
      int32_t pos = cn.ref_idx;
      for (uint32_t a = v; a != kRoot; a = nodes_[a].parent) {
        const Node& an = nodes_[a];
        pos -= an.length;
        for (int32_t i = 0; i < an.length; ++i)
          if (ref[pos + i] != tok(an.ref_seq, an.ref_idx + i)) return "reference is not a path occurrence";
      }
      child_sum += cn.count;
      depth_of[c] = d;
      stack.push_back(c);
    }
    if (child_sum > vn.count) return "children counts exceed parent count";
    if (v != kRoot && kids == 1 && child_sum == vn.count) return "unmerged unary node";
  }
  // Counts: every live suffix passes through exactly the nodes on its path.
  int64_t total = 0;
  for (size_t sid = 0; sid < seqs_.size(); ++sid) {
    if (!seqs_[sid] || !seqs_[sid]->live) continue;
    const auto& seq = seqs_[sid]->tokens;
    const int32_t n = static_cast<int32_t>(seq.size());
    total += n;
    for (int32_t start = 0; start < n; ++start) {
      const int32_t end = std::min(n, start + max_depth_);
      uint32_t v = kRoot;
      int32_t idx = start;
      while (idx < end) {
        const uint32_t c = edges_.find(v, seq[idx]);
        if (c == kNil) return "missing suffix path";
        const Node& cn = nodes_[c];
        if (idx + cn.length > end) return "suffix ends inside an edge";
        for (int32_t i = 0; i < cn.length; ++i)
          if (seq[idx + i] != tok(cn.ref_seq, cn.ref_idx + i)) return "suffix path mismatch";
        visits[c]++;
        idx += cn.length;
        v = c;
      }
    }
  }
  if (nodes_[kRoot].count != total) return "root count is not the number of suffixes";
  for (const auto& [v, d] : depth_of) {
    if (v != kRoot && nodes_[v].count != visits[v]) return "count differs from occurrences";
  }
  return "";
}

}  // namespace arctic_core
