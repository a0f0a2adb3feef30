#include "arctic_core/worker_pool.h"

#include <algorithm>

namespace arctic_core {

WorkerPool::WorkerPool(int threads) {
  for (int w = 1; w < std::max(threads, 1); ++w) {
    workers_.emplace_back([this, w] { worker_loop(w); });
  }
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void WorkerPool::run_chunks(int worker) {
  for (;;) {
    const size_t begin = next_.fetch_add(grain_);
    if (begin >= n_) return;
    try {
      (*body_)(begin, std::min(n_, begin + grain_), worker);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = std::current_exception();
    }
  }
}

void WorkerPool::worker_loop(int worker) {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return stop_ || job_ != seen; });
      if (stop_) return;
      seen = job_;
    }
    run_chunks(worker);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (--busy_ == 0) done_.notify_one();
    }
  }
}

void WorkerPool::parallel_for(size_t n, size_t grain, const Body& body) {
  if (workers_.empty() || n <= grain) {
    if (n > 0) body(0, n, 0);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    body_ = &body;
    n_ = n;
    grain_ = std::max<size_t>(grain, 1);
    next_.store(0);
    error_ = nullptr;
    busy_ = static_cast<int>(workers_.size());
    ++job_;
  }
  wake_.notify_all();
  run_chunks(0);
  std::exception_ptr err;
  {
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [&] { return busy_ == 0; });
    err = error_;
    body_ = nullptr;
  }
  if (err) std::rethrow_exception(err);
}

}  // namespace arctic_core
