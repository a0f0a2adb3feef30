// A small persistent thread pool for data-parallel loops over independent
// items (the requests of one engine step). The calling thread takes part;
// `threads - 1` workers wait on a condition variable between jobs.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace arctic_core {

class WorkerPool {
 public:
  // fn(begin, end, worker): process items [begin, end) on worker slot
  // `worker` (0 = the caller), so callers can keep per-worker scratch.
  using Body = std::function<void(size_t, size_t, int)>;

  explicit WorkerPool(int threads);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Run body over [0, n) in chunks of `grain`; returns when all are done and
  // rethrows the first exception a chunk raised.
  void parallel_for(size_t n, size_t grain, const Body& body);

 private:
  void run_chunks(int worker);
  void worker_loop(int worker);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_, done_;
  uint64_t job_ = 0;  // bumped per parallel_for
  int busy_ = 0;      // workers still inside the current job
  bool stop_ = false;
  // Current job.
  const Body* body_ = nullptr;
  size_t n_ = 0, grain_ = 1;
  std::atomic<size_t> next_{0};
  std::exception_ptr error_;
};

}  // namespace arctic_core
