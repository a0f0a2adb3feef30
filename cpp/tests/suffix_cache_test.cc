// SuffixCache: the request life cycle, a threaded speculate_batch equal to a
// single-threaded one, concurrent callers on one cache (the contract of
// docs/suffix-decoding.md: every public method may be called from any thread
// at any time), typed errors.
#include "arctic_core/suffix_cache.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <thread>
#include <vector>

#include "arctic_core/check.h"

namespace arctic_core {
namespace {

using Text = std::vector<int32_t>;

Text random_text(std::mt19937& rng, int n, int vocab) {
  Text t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng() % vocab);
  return t;
}

// Caches a few responses that the drafts can come from.
void warm(SuffixCache& cache, std::mt19937& rng, int64_t first_handle, int n) {
  for (int64_t h = first_handle; h < first_handle + n; ++h) {
    cache.start_request(h, random_text(rng, 20, 6), /*cache_response=*/true);
    cache.add_response(h, random_text(rng, 200, 6));
    cache.stop_request(h);
  }
}

TEST(SuffixCache, LifeCycleKeepsTokenCountsAndFreesEverything) {
  std::mt19937 rng(1);
  SuffixCache cache(16);
  const size_t empty = cache.memory_bytes();
  warm(cache, rng, 0, 10);
  EXPECT_EQ(cache.num_tokens(), 2000u);  // responses only
  cache.start_request(100, Text{1, 2, 3}, /*cache_response=*/false);
  cache.add_response(100, Text{4, 5});
  cache.stop_request(100);  // not cached: nothing added
  EXPECT_EQ(cache.num_tokens(), 2000u);
  for (int64_t h = 0; h < 10; ++h) cache.evict_response(h);
  EXPECT_EQ(cache.check_integrity(), "");
  EXPECT_EQ(cache.num_tokens(), 0u);
  EXPECT_EQ(cache.memory_bytes(), empty);
}

TEST(SuffixCache, ThreadedBatchEqualsSingleThreaded) {
  std::mt19937 rng_a(2), rng_b(2);
  SuffixCache one(24, 1), four(24, 4);
  warm(one, rng_a, 0, 20);
  warm(four, rng_b, 0, 20);
  std::mt19937 rng(3);
  std::vector<int64_t> handles;
  for (int64_t h = 1000; h < 1064; ++h) {
    const Text prompt = random_text(rng, 30, 6);
    one.start_request(h, prompt, true);
    four.start_request(h, prompt, true);
    handles.push_back(h);
  }
  SpecParams params;
  params.max_spec_tokens = 16;
  for (int step = 0; step < 20; ++step) {
    Text tokens;
    std::vector<int64_t> offsets{0};
    for (size_t i = 0; i < handles.size(); ++i) {
      const Text t = random_text(rng, 1 + static_cast<int>(rng() % 3), 6);
      tokens.insert(tokens.end(), t.begin(), t.end());
      offsets.push_back(static_cast<int64_t>(tokens.size()));
    }
    DraftBatch a, b;
    one.speculate_batch(handles, tokens, offsets, nullptr, nullptr, params, a);
    four.speculate_batch(handles, tokens, offsets, nullptr, nullptr, params, b);
    ASSERT_EQ(a.offsets, b.offsets);
    ASSERT_EQ(a.token_ids, b.token_ids);
    ASSERT_EQ(a.probs, b.probs);
    ASSERT_EQ(a.match_lens, b.match_lens);
  }
  EXPECT_EQ(four.check_integrity(), "");
}

TEST(SuffixCacheConcurrent, ThreadsRunWholeRequestsOnOneCache) {
  // Each thread runs its own requests end to end (start, grow, draft, stop,
  // evict) while the others do the same; threaded batches run meanwhile.
  SuffixCache cache(16, 2);
  std::mt19937 seed_rng(4);
  warm(cache, seed_rng, 0, 5);
  constexpr int kThreads = 4;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&cache, t] {
      std::mt19937 rng(100 + t);
      SpecParams params;
      Draft draft;
      for (int r = 0; r < 30; ++r) {
        const int64_t h = 10000 * (t + 1) + r;
        cache.start_request(h, random_text(rng, 10, 6), /*cache_response=*/r % 2 == 0);
        for (int step = 0; step < 10; ++step) {
          cache.add_response(h, random_text(rng, 3, 6));
          cache.speculate(h, {}, /*own_tail=*/true, params, draft);
        }
        const int64_t other = 50000 + t;
        cache.start_request(other, random_text(rng, 5, 6), false);
        DraftBatch batch;
        const Text next{1, 2};
        const std::vector<int64_t> handles{h, other}, offsets{0, 1, 2};
        cache.speculate_batch(handles, next, offsets, nullptr, nullptr, params, batch);
        cache.stop_request(other);
        cache.stop_request(h);
        if (r % 2 == 0 && r >= 4) cache.evict_response(h - 4);
        (void)cache.memory_bytes();
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(cache.check_integrity(), "");
}

TEST(SuffixCache, MisuseThrowsTypedErrors) {
  SuffixCache cache(8);
  EXPECT_THROW(SuffixCache(0), InvalidArgument);
  cache.start_request(1, Text{1, 2}, true);
  EXPECT_THROW(cache.start_request(1, Text{1}, true), InvalidArgument);
  EXPECT_THROW(cache.add_response(2, Text{1}), NotFound);
  EXPECT_THROW(cache.stop_request(2), NotFound);
  EXPECT_THROW(cache.evict_response(2), NotFound);
  SpecParams bad;
  bad.min_token_prob = 2.0;
  Draft d;
  EXPECT_THROW(cache.speculate(1, {}, true, bad, d), InvalidArgument);
  DraftBatch batch;
  const std::vector<int64_t> twice{1, 1}, offsets{0, 0, 0};
  EXPECT_THROW(cache.speculate_batch(twice, {}, offsets, nullptr, nullptr, SpecParams{}, batch),
               InvalidArgument);
  const std::vector<int64_t> one{1}, short_offsets{0};
  EXPECT_THROW(cache.speculate_batch(one, {}, short_offsets, nullptr, nullptr, SpecParams{}, batch),
               InvalidArgument);
  EXPECT_EQ(cache.check_integrity(), "");
}

}  // namespace
}  // namespace arctic_core
