// Open-addressing hash map from (parent node, first token) to child node.
//
// One map serves a whole tree, so a node with thousands of children (the root)
// costs the same O(1) lookup as a node with one, and a node pays nothing for an
// empty per-node container. Linear probing with backward-shift deletion keeps
// the table free of tombstones.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace arctic_core {

class EdgeMap {
 public:
  static constexpr uint32_t kNone = 0xFFFFFFFFu;

  EdgeMap() { rehash(16); }

  uint32_t find(uint32_t parent, int32_t token) const {
    const uint64_t key = make_key(parent, token);
    for (size_t i = slot_of(key);; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.key == key) return s.value;
      if (s.key == kEmpty) return kNone;
    }
  }

  // Insert or overwrite.
  void put(uint32_t parent, int32_t token, uint32_t child) {
    if ((size_ + 1) * 2 > slots_.size()) rehash(slots_.size() * 2);  // load <= 1/2
    const uint64_t key = make_key(parent, token);
    for (size_t i = slot_of(key);; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.key == key) {
        s.value = child;
        return;
      }
      if (s.key == kEmpty) {
        s.key = key;
        s.value = child;
        ++size_;
        return;
      }
    }
  }

  // Remove if present.
  void erase(uint32_t parent, int32_t token) {
    const uint64_t key = make_key(parent, token);
    size_t i = slot_of(key);
    for (;; i = (i + 1) & mask_) {
      if (slots_[i].key == key) break;
      if (slots_[i].key == kEmpty) return;
    }
    // Backward-shift: move later entries of the probe run into the hole.
    size_t hole = i;
    for (size_t j = (i + 1) & mask_;; j = (j + 1) & mask_) {
      if (slots_[j].key == kEmpty) break;
      const size_t home = slot_of(slots_[j].key);
      // Entry j may move to hole if its home is not in (hole, j] cyclically.
      const bool between = (hole <= j) ? (hole < home && home <= j) : (hole < home || home <= j);
      if (!between) {
        slots_[hole] = slots_[j];
        hole = j;
      }
    }
    slots_[hole].key = kEmpty;
    --size_;
    if (slots_.size() > 64 && size_ * 8 < slots_.size()) rehash(slots_.size() / 2);
  }

  size_t size() const { return size_; }
  size_t memory_bytes() const { return slots_.capacity() * sizeof(Slot); }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  struct Slot {
    uint64_t key;
    uint32_t value;
  };

  static uint64_t make_key(uint32_t parent, int32_t token) {
    return (uint64_t{parent} << 32) | static_cast<uint32_t>(token);
  }
  size_t slot_of(uint64_t key) const {
    // Fibonacci hashing: the high bits of the product are well mixed.
    return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_);
  }
  void rehash(size_t capacity) {
    std::vector<Slot> old;
    old.swap(slots_);
    slots_.assign(capacity, Slot{kEmpty, 0});
    mask_ = capacity - 1;
    shift_ = 64;
    for (size_t c = capacity; c > 1; c >>= 1) --shift_;
    size_ = 0;
    for (const Slot& s : old) {
      if (s.key == kEmpty) continue;
      for (size_t i = slot_of(s.key);; i = (i + 1) & mask_) {
        if (slots_[i].key == kEmpty) {
          slots_[i] = s;
          ++size_;
          break;
        }
      }
    }
  }

  std::vector<Slot> slots_;
  size_t mask_ = 0;
  int shift_ = 64;
  size_t size_ = 0;
};

}  // namespace arctic_core
