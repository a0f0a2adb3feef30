// Open-addressing hash map from (parent node, first token) to child node.
//
// One map serves a whole tree, so a node with thousands of children (the root)
// costs the same O(1) lookup as a node with one, and a node pays nothing for an
// empty per-node container. Linear probing with backward-shift deletion keeps
// the table free of tombstones. 12-byte slots, filled up to 3/4: the map
// holds the children of nodes with many of them, a large part of a big
// tree's bytes.
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
    for (size_t i = slot_of(parent, token);; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.parent == parent && s.token == token) return s.value;
      if (s.parent == kEmpty) return kNone;
    }
  }

  // Insert or overwrite.
  void put(uint32_t parent, int32_t token, uint32_t child) {
    if ((size_ + 1) * 4 > slots_.size() * 3) rehash(slots_.size() * 2);  // load <= 3/4
    for (size_t i = slot_of(parent, token);; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.parent == parent && s.token == token) {
        s.value = child;
        return;
      }
      if (s.parent == kEmpty) {
        s = Slot{parent, token, child};
        ++size_;
        return;
      }
    }
  }

  // Remove if present.
  void erase(uint32_t parent, int32_t token) {
    size_t i = slot_of(parent, token);
    for (;; i = (i + 1) & mask_) {
      if (slots_[i].parent == parent && slots_[i].token == token) break;
      if (slots_[i].parent == kEmpty) return;
    }
    // Backward-shift: move later entries of the probe run into the hole.
    size_t hole = i;
    for (size_t j = (i + 1) & mask_;; j = (j + 1) & mask_) {
      if (slots_[j].parent == kEmpty) break;
      const size_t home = slot_of(slots_[j].parent, slots_[j].token);
      // Entry j may move to hole if its home is not in (hole, j] cyclically.
      const bool between = (hole <= j) ? (hole < home && home <= j) : (hole < home || home <= j);
      if (!between) {
        slots_[hole] = slots_[j];
        hole = j;
      }
    }
    slots_[hole].parent = kEmpty;
    --size_;
    if (slots_.size() > 64 && size_ * 8 < slots_.size()) rehash(slots_.size() / 2);
  }

  size_t size() const { return size_; }
  size_t memory_bytes() const { return slots_.capacity() * sizeof(Slot); }

 private:
  static constexpr uint32_t kEmpty = kNone;  // no node has this id
  struct Slot {
    uint32_t parent;
    int32_t token;
    uint32_t value;
  };

  size_t slot_of(uint32_t parent, int32_t token) const {
    // Fibonacci hashing: the high bits of the product are well mixed.
    const uint64_t key = (uint64_t{parent} << 32) | static_cast<uint32_t>(token);
    return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_);
  }
  void rehash(size_t capacity) {
    std::vector<Slot> old;
    old.swap(slots_);
    slots_.assign(capacity, Slot{kEmpty, 0, 0});
    mask_ = capacity - 1;
    shift_ = 64;
    for (size_t c = capacity; c > 1; c >>= 1) --shift_;
    size_ = 0;
    for (const Slot& s : old) {
      if (s.parent == kEmpty) continue;
      for (size_t i = slot_of(s.parent, s.token);; i = (i + 1) & mask_) {
        if (slots_[i].parent == kEmpty) {
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
