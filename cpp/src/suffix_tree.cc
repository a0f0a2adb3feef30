#include "arctic_core/suffix_tree.h"

#include <algorithm>
#include <numeric>
#include <queue>
#include <unordered_map>

#include "arctic_core/check.h"

namespace arctic_core {

SuffixTree::SuffixTree(int32_t max_depth, CopyRule copy) : max_depth_(max_depth), copy_(copy) {
  ARCTIC_CHECK(max_depth >= 1 && max_depth <= kMaxDepth, InvalidArgument,
               "max_depth must be within [1, ", kMaxDepth, "], got ", max_depth);
  nodes_.emplace_back();  // the root: count = number of suffixes, no edge
}

// ---------------------------------------------------------------- sequences

int32_t SuffixTree::add_sequence() {
  for (size_t i = 0; i < seqs_.size(); ++i) {
    if (!seqs_[i]) {
      seqs_[i] = std::make_unique<Sequence>();
      seq_refs_[i] = 0;
      return static_cast<int32_t>(i);
    }
  }
  ARCTIC_CHECK(seqs_.size() < 0x7FFFFFFF, InvalidArgument, "too many sequences");
  seqs_.push_back(std::make_unique<Sequence>());
  seq_refs_.push_back(0);
  return static_cast<int32_t>(seqs_.size() - 1);
}

bool SuffixTree::has_sequence(int32_t seq_id) const {
  return seq_id >= 0 && static_cast<size_t>(seq_id) < seqs_.size() && seqs_[seq_id] &&
         seqs_[seq_id]->live;
}

const SuffixTree::Sequence& SuffixTree::live_seq(int32_t seq_id) const {
  ARCTIC_CHECK(has_sequence(seq_id), NotFound, "unknown sequence id ", seq_id);
  return *seqs_[seq_id];
}

std::span<const int32_t> SuffixTree::tokens(int32_t seq_id) const {
  return live_seq(seq_id).tokens;
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
  seq_refs_[ref_seq]++;
  link_child(parent, id);
  return id;
}

void SuffixTree::release_seq_ref(int32_t seq) {
  if (--seq_refs_[seq] == 0 && !seqs_[seq]->live) seqs_[seq].reset();
}

void SuffixTree::set_ref(Node& n, int32_t seq, int32_t idx) {
  if (n.ref_seq != seq) {
    seq_refs_[seq]++;
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
    const bool mapped = nodes_[v].mapped;
    for (uint32_t c = nodes_[v].first_child; c != kNil; c = nodes_[c].next_sibling) {
      if (mapped) edges_.erase(v, nodes_[c].token);
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
  if (p.mapped) {
    edges_.put(parent, c.token, child);
    return;
  }
  // Few children are found by walking the list; more go into the edge map.
  int32_t kids = 0;
  for (uint32_t k = child; k != kNil && kids <= kMapAt; k = nodes_[k].next_sibling) ++kids;
  if (kids > kMapAt) {
    p.mapped = 1;
    for (uint32_t k = child; k != kNil; k = nodes_[k].next_sibling)
      edges_.put(parent, nodes_[k].token, k);
  }
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
  if (p.mapped) edges_.erase(c.parent, c.token);
  c.parent = c.next_sibling = c.prev_sibling = kNil;
}

uint32_t SuffixTree::split(uint32_t c, int32_t j, Active* self) {
  // Cut c's edge after j tokens: a new node u above c takes the first j
  // tokens, the count and c's reference (which covers both parts). Active
  // suffixes pending in c at offset <= j move to u (`self`, if given, is
  // one of them); they stop before the lower part, so it counts fewer.
  const Node cn = nodes_[c];
  unlink_child(c);
  const uint32_t u = new_node(cn.parent, cn.token, cn.count, j, cn.ref_seq, cn.ref_idx);
  Node& cc = nodes_[c];
  cc.length -= j;
  cc.ref_idx += j;
  cc.token = tok(cc.ref_seq, cc.ref_idx);
  link_child(u, c);
  if (cn.pend == 0) return u;
  int32_t above = 0, at = 0;
  auto move = [&](Active& e) {
    if (e.off < j) {
      e.node = u;
      ++above;
    } else if (e.off == j) {
      e = Active{u, kEnd};
      ++at;
    } else {
      e.off -= j;
    }
  };
  if (self != nullptr && cn.pend == 1) {
    move(*self);  // the only pending suffix here
  } else {
    // Others pending in the same edge: scan every growing sequence.
    for (const int32_t g : growing_) {
      Sequence& s = *seqs_[g];
      for (int32_t k = 0; k < s.ring_size; ++k) {
        Active& e = ring_at(s, k);
        if (e.node == c && e.off != kEnd) move(e);
      }
    }
  }
  nodes_[u].pend = above;
  nodes_[c].pend = cn.pend - above - at;
  nodes_[c].count = cn.count - above - at;
  return u;
}

// ---------------------------------------------------------------- append

void SuffixTree::extend(int32_t seq_id, std::span<const int32_t> tokens) {
  for (int32_t t : tokens) append(seq_id, t);
}

void SuffixTree::append(int32_t seq_id, int32_t token) {
  ARCTIC_CHECK(has_sequence(seq_id), NotFound, "unknown sequence id ", seq_id);
  Sequence& s = *seqs_[seq_id];
  ARCTIC_CHECK(s.tokens.size() < 0x7FFFFFFF, InvalidArgument, "sequence too long");
  ARCTIC_CHECK(s.ring_size > 0 || s.tokens.empty(), InvalidArgument, "sequence ", seq_id,
               " was inserted whole or finished and cannot grow");
  if (s.ring.empty()) {
    // A node counts the suffixes pending in its edge in 18 bits.
    ARCTIC_CHECK((growing_.size() + 1) * max_depth_ < (size_t{1} << 18), InvalidArgument,
                 "too many sequences growing at once (", growing_.size() + 1, ") for max_depth ",
                 max_depth_, ": stop some requests first");
    s.ring.resize(max_depth_);
    growing_.push_back(seq_id);
  }
  appended_ = true;
  const bool newest = copy_ == CopyRule::kNewest;
  // Loci may move (splits) and longer matches may appear.
  ++generation_;
  const int32_t pos = static_cast<int32_t>(s.tokens.size());  // index of `token`

  // A new suffix starts at the root; one already max_depth long is final
  // (it ends at depth max_depth, which is always a node end): `token` is
  // its continuation.
  if (s.ring_size == max_depth_) {
    if (newest) {
      Node& x = nodes_[ring_at(s, 0).node];
      set_ref(x, seq_id, pos - x.length);
    }
    s.ring_start = (s.ring_start + 1) % max_depth_;
    --s.ring_size;
  }
  ring_at(s, s.ring_size) = Active{kRoot, kEnd};
  ++s.ring_size;
  nodes_[kRoot].count++;

  s.tokens.push_back(token);
  ++num_tokens_;

  Active* const ring_begin = s.ring.data();
  Active* const ring_end = ring_begin + max_depth_;
  Active* ap = ring_begin + s.ring_start;
  // kNewest: a node a suffix has passed points at that occurrence, except
  // at max_depth, where that waits until the occurrence is final (above).
  int32_t len = s.ring_size;  // length of suffix k once `token` is added
  for (int32_t k = 0; k < s.ring_size;
       ++k, --len, ap = (ap + 1 == ring_end) ? ring_begin : ap + 1) {
    Active& a = *ap;
    Node& x = nodes_[a.node];
    if (a.off != kEnd) {
      // Inside an edge: follow it if the text does, else branch off here.
      if (tok(x.ref_seq, x.ref_idx + a.off) == token) {
        if (++a.off == static_cast<int32_t>(x.length)) {
          a.off = kEnd;
          x.pend--;
          if (newest && len < max_depth_) set_ref(x, seq_id, pos + 1 - x.length);
        }
      } else {
        // Split where the text diverges (moving other suffixes pending in
        // the same edge to their part); leave through a new leaf.
        const uint32_t u = split(a.node, a.off, &a);
        a = Active{new_node(u, token, 1, 1, seq_id, pos), kEnd};
      }
      continue;
    }
    // At a node end (or the root).
    const uint32_t c = child(a.node, token);
    if (c != kNil) {
      const uint32_t from = a.node;
      Node& cn = nodes_[c];
      cn.count++;
      if (cn.length > 1) {
        cn.pend++;
        a = Active{c, 1};
      } else {
        a = Active{c, kEnd};
        if (newest && len < max_depth_) set_ref(cn, seq_id, pos);
      }
      // Every suffix that entered `from` has now gone on into its only
      // child (sequences writing the same text in lock step): one edge.
      const Node& fn = nodes_[from];
      if (from != kRoot && fn.first_child == c && nodes_[c].next_sibling == kNil &&
          nodes_[c].count == fn.count) {
        absorb_parent(c, &a);
      }
    } else if (a.node != kRoot && x.first_child == kNil &&
               x.count - static_cast<int32_t>(x.pend) == 1 &&
               static_cast<int32_t>(x.length) < kMaxDepth) {
      // Only this suffix reached this leaf's end (others may be following
      // inside its edge): grow the edge.
      x.length++;
      set_ref(x, seq_id, pos + 1 - x.length);
    } else {
      a = Active{new_node(a.node, token, 1, 1, seq_id, pos), kEnd};
    }
  }
}

void SuffixTree::absorb_parent(uint32_t c, Active* self) {
  // c's parent x has c as its only child and no suffix stops in or at the
  // end of x: c takes x's edge in front of its own and x goes.
  const uint32_t x = nodes_[c].parent;
  const Node xn = nodes_[x];
  unlink_child(c);
  unlink_child(x);
  free_node(x);
  Node& cc = nodes_[c];
  cc.token = xn.token;
  cc.length += xn.length;
  cc.ref_idx -= xn.length;  // c's occurrence covers x's edge too
  link_child(xn.parent, c);
  const int32_t pend = nodes_[c].pend;
  if (pend == 0) return;
  if (self != nullptr && pend == 1 && self->node == c && self->off != kEnd) {
    self->off += xn.length;
    return;
  }
  for (const int32_t g : growing_) {  // pending in c: further into the edge now
    Sequence& s = *seqs_[g];
    for (int32_t k = 0; k < s.ring_size; ++k) {
      Active& e = ring_at(s, k);
      if (e.node == c && e.off != kEnd) e.off += xn.length;
    }
  }
}

void SuffixTree::finish(int32_t seq_id) {
  ARCTIC_CHECK(has_sequence(seq_id), NotFound, "unknown sequence id ", seq_id);
  Sequence& s = *seqs_[seq_id];
  const int32_t n = static_cast<int32_t>(s.tokens.size());
  const bool newest = copy_ == CopyRule::kNewest;
  if (s.ring_size > 0) ++generation_;
  for (int32_t k = 0; k < s.ring_size; ++k) {
    Active& a = ring_at(s, k);
    if (a.off != kEnd) {
      // A suffix that stops growing must end at a node end.
      split(a.node, a.off, &a);
    }
    // Every occurrence is final now (the oldest may end at max_depth).
    if (newest && a.node != kRoot) set_ref(nodes_[a.node], seq_id, n - nodes_[a.node].length);
  }
  stop_growing(seq_id);
}

void SuffixTree::stop_growing(int32_t seq_id) {
  Sequence& s = *seqs_[seq_id];
  s.ring_size = 0;
  s.ring_start = 0;
  std::vector<Active>().swap(s.ring);
  growing_.erase(std::remove(growing_.begin(), growing_.end(), seq_id), growing_.end());
}

// ---------------------------------------------------------------- bulk insert

int32_t SuffixTree::insert_sequence(std::span<const int32_t> tokens) {
  ++generation_;
  const int32_t id = add_sequence();
  seqs_[id]->tokens.assign(tokens.begin(), tokens.end());
  const int32_t* seq = seqs_[id]->tokens.data();
  const int32_t n = static_cast<int32_t>(tokens.size());
  num_tokens_ += n;
  // One walk from the root per suffix: follow the existing path, split once
  // where it diverges (or where the suffix ends inside an edge), and hang
  // the rest of the suffix there as one leaf.
  for (int32_t i = 0; i < n; ++i) {
    const int32_t end = std::min(n, i + max_depth_);
    nodes_[kRoot].count++;
    uint32_t v = kRoot;
    int32_t idx = i;
    while (idx < end) {
      const uint32_t c = child(v, seq[idx]);
      if (c == kNil) {
        new_node(v, seq[idx], 1, end - idx, id, idx);
        break;
      }
      const int32_t len = nodes_[c].length;
      const int32_t lim = std::min(len, end - idx);
      const int32_t* edge = seqs_[nodes_[c].ref_seq]->tokens.data() + nodes_[c].ref_idx;
      int32_t j = 1;
      while (j < lim && edge[j] == seq[idx + j]) ++j;
      if (j < len) {
        const uint32_t u = split(c, j, nullptr);
        nodes_[u].count++;
        set_ref(nodes_[u], id, idx);
        if (idx + j < end) new_node(u, seq[idx + j], 1, end - idx - j, id, idx + j);
        break;
      }
      nodes_[c].count++;
      // Point every node this suffix passes at the newest occurrence: when
      // sequences are removed oldest first (the cache's eviction order), a
      // node then never outlives the sequence it reads its edge from, and a
      // removed sequence's tokens are freed at once.
      set_ref(nodes_[c], id, idx);
      v = c;
      idx += len;
    }
  }
  return id;
}

// ---------------------------------------------------------------- removal

void SuffixTree::remove_sequence(int32_t seq_id) {
  ARCTIC_CHECK(has_sequence(seq_id), NotFound, "unknown sequence id ", seq_id);
  ++generation_;
  Sequence& s = *seqs_[seq_id];
  if (!s.ring.empty()) {
    // A growing sequence: give its pending suffixes node ends first. Its
    // occurrences are not made final (it is going away).
    for (int32_t k = 0; k < s.ring_size; ++k) {
      Active& a = ring_at(s, k);
      if (a.off != kEnd) split(a.node, a.off, &a);
    }
    stop_growing(seq_id);
  }
  const std::vector<int32_t>& seq = s.tokens;
  const int32_t n = static_cast<int32_t>(seq.size());
  for (int32_t start = 0; start < n; ++start) {
    const int32_t end = std::min(n, start + max_depth_);
    uint32_t v = kRoot;
    nodes_[kRoot].count--;
    int32_t idx = start;
    while (idx < end) {
      const uint32_t c = child(v, seq[idx]);
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
    // Only growing suffixes may be left in v's edge, none passing its end:
    // the edge past the deepest of them no longer occurs.
    if (v != kRoot && nodes_[v].pend > 0 && nodes_[v].count == nodes_[v].pend) trim(v);
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
      cc.ref_idx -= vlen;  // c's occurrence covers v's edge too
      link_child(parent, c);
      if (nodes_[c].pend > 0) {
        // Suffixes pending in c are now vlen tokens further into its edge.
        for (const int32_t g : growing_) {
          Sequence& gs = *seqs_[g];
          for (int32_t k = 0; k < gs.ring_size; ++k) {
            Active& e = ring_at(gs, k);
            if (e.node == c && e.off != kEnd) e.off += vlen;
          }
        }
      }
    }
  }
  num_tokens_ -= seq.size();
  s.live = false;
  if (seq_refs_[seq_id] == 0) {
    seqs_[seq_id].reset();
  } else {
    s.tokens.shrink_to_fit();  // kept: nodes still read their edges from it
  }
  if (nodes_[kRoot].count == 0) release_storage();
}

void SuffixTree::trim(uint32_t x) {
  // Cut x's edge after its deepest pending suffix (x has no children: their
  // counts cannot exceed the suffixes passing x's end, none).
  int32_t deepest = 0;
  for (const int32_t g : growing_) {
    Sequence& s = *seqs_[g];
    for (int32_t k = 0; k < s.ring_size; ++k) {
      const Active& e = ring_at(s, k);
      if (e.node == x && e.off != kEnd) deepest = std::max(deepest, e.off);
    }
  }
  ARCTIC_CHECK(deepest > 0 && nodes_[x].first_child == kNil, InternalError, "bad trim");
  int32_t at_end = 0;
  for (const int32_t g : growing_) {
    Sequence& s = *seqs_[g];
    for (int32_t k = 0; k < s.ring_size; ++k) {
      Active& e = ring_at(s, k);
      if (e.node != x || e.off != deepest) continue;
      e.off = kEnd;
      ++at_end;
    }
  }
  nodes_[x].length = deepest;
  nodes_[x].pend -= at_end;
}

void SuffixTree::release_storage() {
  // The tree is empty (only the root is left): give the node pool, the edge
  // map and the sequence slots back, so a cache that was emptied returns to
  // an empty tree's memory (the pools only grow otherwise).
  ARCTIC_CHECK(nodes_[kRoot].first_child == kNil, InternalError, "empty tree with children");
  std::vector<Node>(1).swap(nodes_);
  std::vector<uint32_t>().swap(free_nodes_);
  edges_ = EdgeMap();
  // Empty sequences may still be live: keep their slots, drop the rest.
  while (!seqs_.empty() && !seqs_.back()) seqs_.pop_back();
  seqs_.shrink_to_fit();
  seq_refs_.resize(seqs_.size());
  seq_refs_.shrink_to_fit();
}

// ---------------------------------------------------------------- matching

bool SuffixTree::walk(const int32_t* s, int32_t n, Locus& l) const {
  uint32_t v = kRoot;
  int32_t off = 0;
  for (int32_t i = 0; i < n; ++i) {
    if (off == nodes_[v].length) {
      const uint32_t c = child(v, s[i]);
      if (c == kNil) return false;
      v = c;
      off = 1;
      continue;
    }
    const Node& vn = nodes_[v];
    if (tok(vn.ref_seq, vn.ref_idx + off) != s[i]) return false;
    ++off;
  }
  l = Locus{v, off, n};
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

Locus SuffixTree::longest_match(std::span<const int32_t> context) const {
  // Occurrence is monotone in the match length, so binary search it; try
  // the full length first, the common case when text is being copied.
  const int32_t L = static_cast<int32_t>(std::min<size_t>(context.size(), max_depth_));
  const int32_t* end = context.data() + context.size();
  Locus best{kRoot, 0, 0}, l;
  if (L > 0 && walk(end - L, L, l)) return l;
  int32_t lo = 0, hi = L - 1;
  while (lo < hi) {
    const int32_t mid = (lo + hi + 1) / 2;
    if (walk(end - mid, mid, l)) {
      lo = mid;
      best = l;
    } else {
      hi = mid - 1;
    }
  }
  return best;
}

Locus SuffixTree::locate(std::span<const int32_t> str) const {
  Locus l{kRoot, 0, 0};
  const int32_t n = static_cast<int32_t>(str.size());
  ARCTIC_CHECK(n <= max_depth_, InternalError, "locate: ", n, " tokens exceed max_depth");
  while (l.depth < n) {
    const uint32_t c = child(l.node, str[l.depth]);
    ARCTIC_CHECK(c != kNil, InternalError, "locate: the string does not occur");
    l.node = c;
    l.offset = std::min<int32_t>(nodes_[c].length, n - l.depth);
    l.depth += l.offset;
  }
  return l;
}

void SuffixTree::tail_loci(int32_t seq_id, std::vector<Locus>& out,
                           std::vector<int64_t>& occ) const {
  const int32_t n = tail_count(seq_id);
  out.resize(n);
  occ.resize(n);
  for (int32_t m = 1; m <= n; ++m) out[m - 1] = tail_locus(seq_id, m, occ[m - 1]);
}

Locus SuffixTree::tail_locus(int32_t seq_id, int32_t m, int64_t& occ) const {
  const Sequence& s = live_seq(seq_id);
  ARCTIC_CHECK(m >= 1 && m <= s.ring_size, InvalidArgument, "tail_locus: m = ", m,
               " is outside [1, ", s.ring_size, "]");
  // The ring holds the oldest (longest) first.
  int32_t idx = s.ring_start + s.ring_size - m;
  if (idx >= max_depth_) idx -= max_depth_;
  const Active& a = s.ring[idx];
  const Node& x = nodes_[a.node];
  const Locus l{a.node, a.off == kEnd ? static_cast<int32_t>(x.length) : a.off, m};
  // A pending tail suffix alone in its edge stops no one before itself.
  occ = (x.pend == 0 || (x.pend == 1 && a.off != kEnd)) ? x.count : cheap_occurrences(l);
  return l;
}

int64_t SuffixTree::occurrences(const Locus& l) const {
  // Suffixes that entered the edge, minus the active ones that stopped
  // inside it before this point.
  const Node& x = nodes_[l.node];
  if (x.pend == 0) return x.count;
  if (l.offset == x.length) return x.count - x.pend;
  int64_t stopped = 0;
  for (const int32_t g : growing_) {
    const Sequence& s = *seqs_[g];
    for (int32_t k = 0; k < s.ring_size; ++k) {
      const Active& e = s.ring[(s.ring_start + k) % max_depth_];
      if (e.node == l.node && e.off != kEnd && e.off < l.offset) ++stopped;
    }
  }
  return x.count - stopped;
}

int64_t SuffixTree::cheap_occurrences(const Locus& l) const {
  // Scanning the active suffixes is cheap with one growing sequence; with
  // many (the shared tree) the caller does without the number.
  const Node& x = nodes_[l.node];
  if (x.pend == 0 || l.offset == x.length) return x.count - x.pend;
  return growing_.size() <= 1 ? occurrences(l) : -1;
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
  // Called at max_depth, where counts end.
  const Node& vn = nodes_[v];
  if (copy_ == CopyRule::kNone) return -1;
  if (copy_ == CopyRule::kNewest) {
    // The reference is the occurrence that became final last: copy what
    // follows it, if its sequence is still there.
    if (!has_sequence(vn.ref_seq)) return -1;
    const int32_t end = vn.ref_idx + vn.length;
    return end < static_cast<int32_t>(seqs_[vn.ref_seq]->tokens.size()) ? end : -1;
  }
  // kUnique: copy only when exactly one occurrence continues: the node's
  // reference is its oldest occurrence, and the other one (if there are two)
  // must be the sequence's own tail, which has no continuation.
  const int32_t occ = vn.count - vn.pend;
  if (occ > 2) return -1;
  const std::vector<int32_t>& seq = seqs_[vn.ref_seq]->tokens;
  const int32_t end = vn.ref_idx + vn.length;
  if (end >= static_cast<int32_t>(seq.size())) return -1;
  if (occ == 2 &&
      !std::equal(seq.begin() + (end - max_depth_), seq.begin() + end, seq.end() - max_depth_)) {
    return -1;
  }
  return end;
}

void SuffixTree::draft(const Locus& at, int32_t budget, double min_token_prob, bool tree_mode,
                       Draft& out) const {
  out.reset();
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
  // Runs of tokens with one probability (the rest of an edge, a copy) are
  // appended at once; the score is summed token by token, as elsewhere.
  auto push_run = [&](const int32_t* src, int32_t k) {
    const int32_t base = static_cast<int32_t>(out.token_ids.size());
    out.token_ids.insert(out.token_ids.end(), src, src + k);
    out.parents.resize(base + k);
    std::iota(out.parents.begin() + base, out.parents.end(), base - 1);
    out.probs.insert(out.probs.end(), k, p);
    for (int32_t i = 0; i < k; ++i) out.score += p;
  };
  while (static_cast<int32_t>(out.token_ids.size()) < budget) {
    const Node& vn = nodes_[v];
    const int32_t room = budget - static_cast<int32_t>(out.token_ids.size());
    if (off < vn.length) {
      const int32_t k = std::min(room, static_cast<int32_t>(vn.length) - off);
      push_run(seqs_[vn.ref_seq]->tokens.data() + vn.ref_idx + off, k);
      off += k;
      depth += k;
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
      out.cut = true;  // reached the depth limit
      if (start < 0) break;
      const std::vector<int32_t>& seq = seqs_[vn.ref_seq]->tokens;
      push_run(seq.data() + start, std::min(room, static_cast<int32_t>(seq.size()) - start));
      break;
    }
  }
}

namespace {
struct TreeItem {
  double prob;
  int64_t order;  // insertion order: ties pop oldest first
  uint32_t node;  // kNil marks a copy item (`off` indexes `seq`)
  int32_t off;    // edge offset, or position for copy items
  int32_t depth;
  int32_t parent;
  int32_t seq;  // sequence read by copy items
  bool operator<(const TreeItem& o) const {
    if (prob != o.prob) return prob < o.prob;
    return order > o.order;
  }
};
}  // namespace

void SuffixTree::draft_tree(Locus at, int32_t budget, double min_prob, Draft& out) const {
  // Best-first expansion: the most probable pending continuation is emitted
  // next. A position with a single continuation (inside an edge, or a node
  // end with one child) emits it directly; a branching one expands into one
  // item per child, most frequent first (ties: smallest token).
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
    if (it.node == kNil) {  // copying the one continuing occurrence
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
      kids.clear();
      int64_t total = 0;
      for (uint32_t c = vn.first_child; c != kNil; c = nodes_[c].next_sibling) {
        kids.push_back(c);
        total += nodes_[c].count;
      }
      if (kids.size() == 1) {
        const Node& cn = nodes_[kids[0]];
        const int32_t me = emit(tok(cn.ref_seq, cn.ref_idx));
        heap.push(TreeItem{it.prob, order++, kids[0], 1, it.depth + 1, me, -1});
        continue;
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
    } else {
      out.cut = true;  // reached the depth limit
      if (const int32_t start = copy_start(it.node); start >= 0)
        heap.push(TreeItem{it.prob, order++, kNil, start, it.depth, it.parent, vn.ref_seq});
    }
  }
}

// ---------------------------------------------------------------- accounting

size_t SuffixTree::memory_bytes() const {
  size_t total = sizeof(*this) + nodes_.capacity() * sizeof(Node) +
                 free_nodes_.capacity() * sizeof(uint32_t) + edges_.memory_bytes() +
                 seqs_.capacity() * sizeof(std::unique_ptr<Sequence>) +
                 seq_refs_.capacity() * sizeof(int32_t) + growing_.capacity() * sizeof(int32_t);
  for (const auto& s : seqs_) {
    if (!s) continue;
    total += sizeof(Sequence) + s->tokens.capacity() * sizeof(int32_t) +
             s->ring.capacity() * sizeof(Active);
  }
  return total;
}

std::string SuffixTree::check_integrity() const {
  const bool canonical = !appended_;
  // Structure: links, edge keys, references, depths, count ordering.
  std::vector<uint32_t> stack{kRoot};
  std::unordered_map<uint32_t, int32_t> depth_of{{kRoot, 0}};
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
      if (child(v, cn.token) != c) return "child lookup disagrees with child list";
      if (cn.length <= 0) return "non-positive edge length";
      if (cn.count <= 0) return "non-positive count";
      if (static_cast<int32_t>(cn.pend) >= cn.count + (cn.length > 1 ? 0 : 1)) return "bad pend";
      if (cn.ref_seq < 0 || !seqs_[cn.ref_seq]) return "dangling reference";
      const auto& ref = seqs_[cn.ref_seq]->tokens;
      const int32_t d = depth_of[v] + cn.length;
      if (d > max_depth_) return "path deeper than max_depth";
      if (cn.ref_idx - depth_of[v] < 0 || cn.ref_idx + cn.length > static_cast<int32_t>(ref.size()))
        return "reference out of range";
      if (ref[cn.ref_idx] != cn.token) return "edge key is not the first edge token";
      int32_t pos = cn.ref_idx;  // the reference must be a whole-path occurrence
      for (uint32_t a = v; a != kRoot; a = nodes_[a].parent) {
        const Node& an = nodes_[a];
        pos -= an.length;
        for (int32_t i = 0; i < an.length; ++i)
          if (ref[pos + i] != tok(an.ref_seq, an.ref_idx + i))
            return "reference is not a path occurrence";
      }
      child_sum += cn.count;
      depth_of[c] = d;
      stack.push_back(c);
    }
    if (!vn.mapped && kids > kMapAt) return "many children, not in the edge map";
    if (child_sum > vn.count - vn.pend) return "children counts exceed parent count";
    if (canonical && vn.pend != 0) return "pending suffix in a tree without active suffixes";
    if (canonical && v != kRoot && kids == 1 && child_sum == vn.count) return "unmerged unary node";
  }
  // Counts: walk every live suffix; it enters exactly the nodes on its path.
  // Only active suffixes may end inside an edge, at their recorded locus.
  std::unordered_map<uint32_t, int64_t> entered, pending;
  int64_t total = 0;
  for (size_t sid = 0; sid < seqs_.size(); ++sid) {
    if (!seqs_[sid] || !seqs_[sid]->live) continue;
    const Sequence& sq = *seqs_[sid];
    const auto& seq = sq.tokens;
    const int32_t n = static_cast<int32_t>(seq.size());
    total += n;
    for (int32_t start = 0; start < n; ++start) {
      const int32_t end = std::min(n, start + max_depth_);
      uint32_t v = kRoot;
      int32_t idx = start, off = 0;
      while (idx < end) {
        const uint32_t c = child(v, seq[idx]);
        if (c == kNil) return "missing suffix path";
        const Node& cn = nodes_[c];
        entered[c]++;
        off = std::min<int32_t>(cn.length, end - idx);
        for (int32_t i = 0; i < off; ++i)
          if (seq[idx + i] != tok(cn.ref_seq, cn.ref_idx + i)) return "suffix path mismatch";
        idx += off;
        v = c;
      }
      const int32_t k = start - (n - sq.ring_size);  // index in the ring, if active
      const bool is_active = k >= 0;
      if (v != kRoot && off < nodes_[v].length) {
        if (!is_active) return "a finished suffix ends inside an edge";
        pending[v]++;
      }
      if (is_active) {
        const Active& a = sq.ring[(sq.ring_start + k) % max_depth_];
        const int32_t aoff = a.off == kEnd ? static_cast<int32_t>(nodes_[v].length) : a.off;
        if (a.node != v || (v != kRoot && aoff != off)) return "active locus is stale";
      }
    }
  }
  if (nodes_[kRoot].count != total) return "root count is not the number of suffixes";
  for (const auto& [v, d] : depth_of) {
    if (v == kRoot) continue;
    if (nodes_[v].count != entered[v]) return "count differs from suffixes entered";
    if (nodes_[v].pend != pending[v]) return "pend differs from pending suffixes";
  }
  return "";
}

}  // namespace arctic_core
