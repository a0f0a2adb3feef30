// SuffixTree against brute force on small random texts: occurrence counts of
// every short pattern, after inserts, removals and token-by-token growth;
// drafts that are real continuations; typed errors on misuse.
#include "arctic_core/suffix_tree.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "arctic_core/check.h"

namespace arctic_core {
namespace {

using Text = std::vector<int32_t>;

Text random_text(std::mt19937& rng, int n, int vocab) {
  std::uniform_int_distribution<int32_t> tok(0, vocab - 1);
  Text t(n);
  for (auto& x : t) x = tok(rng);
  return t;
}

// Occurrences of `p` in the texts, counting only windows that a tree of
// depth `depth` holds (a pattern longer than the depth never occurs).
int64_t brute_count(const std::vector<Text>& texts, const Text& p, int depth) {
  if (static_cast<int>(p.size()) > depth) return 0;
  int64_t n = 0;
  for (const Text& t : texts) {
    for (size_t i = 0; i + p.size() <= t.size(); ++i) {
      n += std::equal(p.begin(), p.end(), t.begin() + static_cast<std::ptrdiff_t>(i));
    }
  }
  return n;
}

int64_t tree_count(const SuffixTree& tree, const Text& p) {
  Locus l;
  for (int32_t t : p) {
    if (!tree.advance(l, t)) return 0;
  }
  return tree.occurrences(l);
}

// Every pattern of length 1..depth over the vocabulary that occurs, plus
// random ones that mostly do not.
void expect_counts(const SuffixTree& tree, const std::vector<Text>& texts, int depth,
                   std::mt19937& rng, int vocab) {
  for (const Text& t : texts) {
    for (size_t i = 0; i < t.size(); ++i) {
      for (int len = 1; len <= depth + 1 && i + len <= t.size(); ++len) {
        const Text p(t.begin() + static_cast<std::ptrdiff_t>(i),
                     t.begin() + static_cast<std::ptrdiff_t>(i + len));
        ASSERT_EQ(tree_count(tree, p), brute_count(texts, p, depth));
      }
    }
  }
  for (int k = 0; k < 50; ++k) {
    const Text p = random_text(rng, 1 + k % depth, vocab);
    ASSERT_EQ(tree_count(tree, p), brute_count(texts, p, depth));
  }
}

TEST(SuffixTree, CountsMatchBruteForceThroughInsertsAndRemovals) {
  std::mt19937 rng(7);
  for (int round = 0; round < 20; ++round) {
    const int depth = 1 + round % 6, vocab = 2 + round % 4;
    SuffixTree tree(depth, CopyRule::kNewest);
    std::vector<Text> texts;
    std::vector<int32_t> ids;
    for (int i = 0; i < 6; ++i) {
      texts.push_back(random_text(rng, static_cast<int>(rng() % 30), vocab));
      ids.push_back(tree.insert_sequence(texts.back()));
    }
    ASSERT_EQ(tree.check_integrity(), "");
    expect_counts(tree, texts, depth, rng, vocab);
    while (!texts.empty()) {
      const size_t k = rng() % texts.size();
      tree.remove_sequence(ids[k]);
      texts.erase(texts.begin() + static_cast<std::ptrdiff_t>(k));
      ids.erase(ids.begin() + static_cast<std::ptrdiff_t>(k));
      ASSERT_EQ(tree.check_integrity(), "");
      expect_counts(tree, texts, depth, rng, vocab);
    }
  }
}

TEST(SuffixTree, RemovingEverySequenceGivesTheMemoryBack) {
  std::mt19937 rng(3);
  const size_t empty = SuffixTree(8, CopyRule::kNewest).memory_bytes();
  SuffixTree tree(8, CopyRule::kNewest);
  std::vector<int32_t> ids;
  for (int i = 0; i < 50; ++i) ids.push_back(tree.insert_sequence(random_text(rng, 200, 5)));
  EXPECT_GT(tree.memory_bytes(), empty);
  for (int32_t id : ids) tree.remove_sequence(id);
  EXPECT_EQ(tree.check_integrity(), "");
  EXPECT_EQ(tree.num_tokens(), 0u);
  EXPECT_EQ(tree.memory_bytes(), empty);
}

TEST(SuffixTree, FifoRemovalFreesEachRemovedSequencesTokens) {
  // The same text inserted again and again, two copies kept: nodes must move
  // to a kept copy instead of holding a removed one's tokens.
  std::mt19937 rng(5);
  const Text text = random_text(rng, 1000, 50);
  SuffixTree two(16, CopyRule::kNewest), many(16, CopyRule::kNewest);
  two.insert_sequence(text);
  two.insert_sequence(text);
  std::vector<int32_t> ids;
  for (int i = 0; i < 30; ++i) {
    ids.push_back(many.insert_sequence(text));
    if (ids.size() > 2) {
      many.remove_sequence(ids.front());
      ids.erase(ids.begin());
    }
  }
  EXPECT_EQ(many.check_integrity(), "");
  EXPECT_EQ(many.num_tokens(), two.num_tokens());
  EXPECT_LT(many.memory_bytes(), two.memory_bytes() + text.size() * sizeof(int32_t) / 2);
}

TEST(SuffixTree, AppendedTextCountsMatchBruteForce) {
  std::mt19937 rng(11);
  for (int depth : {1, 3, 8}) {
    SuffixTree tree(depth, CopyRule::kUnique);
    const int32_t id = tree.add_sequence();
    Text text;
    for (int i = 0; i < 120; ++i) {
      const int32_t t = static_cast<int32_t>(rng() % 3);
      tree.append(id, t);
      text.push_back(t);
      std::vector<Locus> loci;
      std::vector<int64_t> occ;
      tree.tail_loci(id, loci, occ);
      ASSERT_EQ(loci.size(), std::min<size_t>(text.size(), depth));
      for (size_t m = 1; m <= loci.size(); ++m) {
        const Text tail(text.end() - static_cast<std::ptrdiff_t>(m), text.end());
        ASSERT_EQ(occ[m - 1], brute_count({text}, tail, depth)) << "m=" << m;
        // locate() skips whole edges; it must land where matching does.
        const Locus at = tree.locate(tail);
        ASSERT_EQ(at.node, loci[m - 1].node) << "m=" << m;
        ASSERT_EQ(at.offset, loci[m - 1].offset) << "m=" << m;
        ASSERT_EQ(at.depth, static_cast<int32_t>(m));
      }
    }
    ASSERT_EQ(tree.check_integrity(), "");
  }
}

TEST(SuffixTree, DraftsAreRealContinuationsWithFallingProbabilities) {
  std::mt19937 rng(13);
  SuffixTree tree(12, CopyRule::kNewest);
  std::vector<Text> texts;
  for (int i = 0; i < 8; ++i) {
    texts.push_back(random_text(rng, 60, 4));
    tree.insert_sequence(texts.back());
  }
  for (int k = 0; k < 200; ++k) {
    const Text& src = texts[rng() % texts.size()];
    const size_t at = rng() % (src.size() - 4);
    const Text ctx(src.begin() + static_cast<std::ptrdiff_t>(at),
                   src.begin() + static_cast<std::ptrdiff_t>(at + 4));
    const Locus l = tree.longest_match(ctx);
    ASSERT_EQ(l.depth, 4);
    Draft d;
    tree.draft(l, 8, 0.0, /*tree_mode=*/false, d);
    ASSERT_LE(d.token_ids.size(), 8u);
    Text path = ctx;
    for (size_t i = 0; i < d.token_ids.size(); ++i) {
      path.push_back(d.token_ids[i]);
      ASSERT_GT(d.probs[i], 0.0);
      ASSERT_LE(d.probs[i], 1.0);
      if (i > 0) ASSERT_LE(d.probs[i], d.probs[i - 1]);
      ASSERT_EQ(d.parents[i], static_cast<int32_t>(i) - 1);
      // The drafted string occurs (as far as the tree's depth reaches).
      const Text window(path.end() - std::min<std::ptrdiff_t>(12, path.size()), path.end());
      ASSERT_GT(brute_count(texts, window, 12), 0);
    }
  }
}

TEST(SuffixTree, MisuseThrowsTypedErrors) {
  EXPECT_THROW(SuffixTree(0, CopyRule::kNewest), InvalidArgument);
  SuffixTree tree(4, CopyRule::kNewest);
  const int32_t id = tree.insert_sequence(Text{1, 2, 3});
  EXPECT_THROW(tree.remove_sequence(id + 1), NotFound);
  EXPECT_THROW(tree.append(id, 4), InvalidArgument);  // inserted whole: cannot grow
  EXPECT_THROW(tree.tokens(-1), NotFound);
  tree.remove_sequence(id);
  EXPECT_THROW(tree.remove_sequence(id), NotFound);
  EXPECT_THROW(SuffixTree(SuffixTree::kMaxDepth + 1, CopyRule::kNewest), InvalidArgument);
  SuffixTree grown(4, CopyRule::kUnique);
  const int32_t g = grown.add_sequence();
  grown.append(g, 1);
  EXPECT_THROW(grown.append(g + 1, 1), NotFound);
  std::vector<Locus> loci;
  std::vector<int64_t> occ;
  EXPECT_THROW(grown.tail_loci(g + 1, loci, occ), NotFound);
  int64_t one = 0;
  EXPECT_THROW(grown.tail_locus(g, 2, one), InvalidArgument);      // one token: one suffix
  EXPECT_THROW(grown.locate(Text{2}), InternalError);              // does not occur
  EXPECT_THROW(grown.locate(Text{1, 1, 1, 1, 1}), InternalError);  // past the depth
}

}  // namespace
}  // namespace arctic_core
