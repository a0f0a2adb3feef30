// nanobind module arctic_inference_core._C: binding code only.
//
// Converts Python token inputs (1-D integer arrays of any stride, or
// sequences of ints) into int32 spans with typed errors, releases the GIL
// around the core, and returns plain Python/numpy values. The typed public
// classes live in arctic_inference_core.suffix.
#include <Python.h>
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cstring>
#include <string>
#include <vector>

#include "arctic_core/check.h"
#include "arctic_core/suffix_cache.h"

namespace nb = nanobind;
using arctic_core::Draft;
using arctic_core::DraftBatch;
using arctic_core::SpecParams;
using arctic_core::SuffixCache;

namespace {

constexpr long long kMaxToken = 0x7FFFFFFF;

[[noreturn]] void bad_token(const char* what, long long v) {
  throw nb::value_error(
      (std::string(what) + " must hold token ids in [0, 2**31 - 1], got " + std::to_string(v))
          .c_str());
}

template <typename T>
void copy_strided(const char* base, Py_ssize_t n, Py_ssize_t stride, const char* what,
                  std::vector<int32_t>& out) {
  out.resize(static_cast<size_t>(n));
  for (Py_ssize_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, base + i * stride, sizeof(T));
    const long long x = static_cast<long long>(v);
    if constexpr (std::is_signed_v<T>) {
      if (x < 0 || x > kMaxToken) bad_token(what, x);
    } else {
      if (static_cast<unsigned long long>(v) > static_cast<unsigned long long>(kMaxToken))
        bad_token(what, x);
    }
    out[i] = static_cast<int32_t>(v);
  }
}

// RAII holder for a Py_buffer.
struct Buffer {
  Py_buffer view{};
  bool ok = false;
  ~Buffer() {
    if (ok) PyBuffer_Release(&view);
  }
};

// Token ids from a 1-D integer buffer (numpy array of any stride), a
// sequence of ints, or (with allow_int) a single int. Writes into `out`.
void to_tokens(nb::handle obj, const char* what, bool allow_int, std::vector<int32_t>& out) {
  PyObject* o = obj.ptr();
  if (o == Py_None) {
    throw nb::type_error((std::string(what) + " must be a 1-D integer array or a sequence of "
                                              "ints, got None")
                             .c_str());
  }
  if (PyLong_Check(o) && !PyBool_Check(o) && allow_int) {
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || v < 0 || v > kMaxToken) bad_token(what, overflow ? -1 : v);
    out.assign(1, static_cast<int32_t>(v));
    return;
  }
  if (PyObject_CheckBuffer(o) && !PyBytes_Check(o) && !PyByteArray_Check(o)) {
    Buffer b;
    if (PyObject_GetBuffer(o, &b.view, PyBUF_RECORDS_RO) != 0) throw nb::python_error();
    b.ok = true;
    if (b.view.ndim != 1) {
      throw nb::value_error((std::string(what) + " must be 1-D, got an array with " +
                             std::to_string(b.view.ndim) + " dimensions")
                                .c_str());
    }
    const char* fmt = b.view.format ? b.view.format : "B";
    if (*fmt == '@' || *fmt == '=' || *fmt == '<') ++fmt;
    const char* base = static_cast<const char*>(b.view.buf);
    const Py_ssize_t n = b.view.shape[0];
    const Py_ssize_t st = b.view.strides ? b.view.strides[0] : b.view.itemsize;
    switch (fmt[0] == '\0' || fmt[1] != '\0' ? '?' : fmt[0]) {
      case 'i':
        if (b.view.itemsize == 4) {
          copy_strided<int32_t>(base, n, st, what, out);
          return;
        }
        break;
      case 'l':
      case 'q':
        if (b.view.itemsize == 8) {
          copy_strided<int64_t>(base, n, st, what, out);
          return;
        }
        if (b.view.itemsize == 4) {
          copy_strided<int32_t>(base, n, st, what, out);
          return;
        }
        break;
      case 'I':
        if (b.view.itemsize == 4) {
          copy_strided<uint32_t>(base, n, st, what, out);
          return;
        }
        break;
      case 'L':
      case 'Q':
        if (b.view.itemsize == 8) {
          copy_strided<uint64_t>(base, n, st, what, out);
          return;
        }
        break;
      case 'h':
        copy_strided<int16_t>(base, n, st, what, out);
        return;
      case 'H':
        copy_strided<uint16_t>(base, n, st, what, out);
        return;
      case 'b':
        copy_strided<int8_t>(base, n, st, what, out);
        return;
      case 'B':
        copy_strided<uint8_t>(base, n, st, what, out);
        return;
      default:
        break;
    }
    throw nb::type_error((std::string(what) +
                          " must have an integer dtype (int32 or int64), got "
                          "buffer format '" +
                          (b.view.format ? b.view.format : "B") + "'")
                             .c_str());
  }
  if (PyUnicode_Check(o) || PyBytes_Check(o) || PyByteArray_Check(o) || PyLong_Check(o) ||
      PyFloat_Check(o) || !PySequence_Check(o)) {
    throw nb::type_error((std::string(what) +
                          " must be a 1-D integer array or a sequence of "
                          "ints, got " +
                          Py_TYPE(o)->tp_name)
                             .c_str());
  }
  PyObject* fast = PySequence_Fast(o, what);
  if (!fast) throw nb::python_error();
  nb::object hold = nb::steal(fast);
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
  PyObject** items = PySequence_Fast_ITEMS(fast);
  out.resize(static_cast<size_t>(n));
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* it = items[i];
    if (!PyLong_Check(it) || PyBool_Check(it)) {
      // numpy integer scalars are not PyLong; accept anything with __index__.
      if (PyBool_Check(it) || !PyIndex_Check(it)) {
        throw nb::type_error((std::string(what) + " must hold ints, got " + Py_TYPE(it)->tp_name +
                              " at position " + std::to_string(i))
                                 .c_str());
      }
    }
    nb::object idx = nb::steal(PyNumber_Index(it));
    if (!idx.is_valid()) throw nb::python_error();
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(idx.ptr(), &overflow);
    if (overflow || v < 0 || v > kMaxToken) {
      if (overflow) {
        throw nb::value_error((std::string(what) + " must hold token ids in [0, 2**31 - 1], got " +
                               nb::str(idx).c_str())
                                  .c_str());
      }
      bad_token(what, v);
    }
    out[i] = static_cast<int32_t>(v);
  }
}

SpecParams make_params(long long max_spec_tokens, double factor, double offset, double min_prob,
                       bool tree) {
  if (max_spec_tokens < 0 || max_spec_tokens > kMaxToken) {
    throw nb::value_error(
        ("max_spec_tokens must be within [0, 2**31 - 1], got " + std::to_string(max_spec_tokens))
            .c_str());
  }
  SpecParams p;
  p.max_spec_tokens = static_cast<int32_t>(max_spec_tokens);
  p.max_spec_factor = factor;
  p.max_spec_offset = offset;
  p.min_token_prob = min_prob;
  p.use_tree_spec = tree;
  arctic_core::validate(p);
  return p;
}

template <typename T>
nb::ndarray<nb::numpy, T, nb::ndim<1>> to_numpy(std::vector<T>&& v) {
  auto* heap = new std::vector<T>(std::move(v));
  nb::capsule owner(heap, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  return nb::ndarray<nb::numpy, T, nb::ndim<1>>(heap->data(), {heap->size()}, owner);
}

thread_local std::vector<int32_t> tls_tokens;
// speculate() swaps its result in: buffers circulate instead of being
// allocated per call.
thread_local Draft tls_draft;

}  // namespace

NB_MODULE(_C, m) {
  m.doc() = "Private native module of arctic_inference_core. Import the public classes instead.";

  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const arctic_core::NotFound& e) {
      PyErr_SetString(PyExc_KeyError, e.what());
    } catch (const arctic_core::InvalidArgument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const arctic_core::InternalError& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  });

  nb::class_<SuffixCache>(m, "SuffixCacheCore")
      .def(nb::init<int32_t, int32_t, bool>(), nb::arg("max_depth"), nb::arg("num_threads") = 1,
           nb::arg("share_active") = false)
      .def_prop_ro("max_depth", &SuffixCache::max_depth)
      .def_prop_ro("share_active", &SuffixCache::share_active)
      .def_prop_ro("num_threads", &SuffixCache::num_threads)
      .def(
          "start_request",
          [](SuffixCache& c, int64_t handle, nb::handle prompt, bool cache_response) {
            std::vector<int32_t> toks;
            to_tokens(prompt, "prompt_token_ids", false, toks);
            nb::gil_scoped_release release;
            c.start_request(handle, toks, cache_response);
          },
          nb::arg("handle"), nb::arg("prompt").none(), nb::arg("cache_response"))
      .def(
          "add_response",
          [](SuffixCache& c, int64_t handle, nb::handle tokens) {
            to_tokens(tokens, "token_ids", true, tls_tokens);
            nb::gil_scoped_release release;
            c.add_response(handle, tls_tokens);
          },
          nb::arg("handle"), nb::arg("tokens").none())
      .def("stop_request", &SuffixCache::stop_request, nb::arg("handle"),
           nb::call_guard<nb::gil_scoped_release>())
      .def("evict_response", &SuffixCache::evict_response, nb::arg("handle"),
           nb::call_guard<nb::gil_scoped_release>())
      .def(
          "speculate",
          [](SuffixCache& c, int64_t handle, nb::handle context, long long max_spec_tokens,
             double factor, double offset, double min_prob, bool tree) {
            const SpecParams p = make_params(max_spec_tokens, factor, offset, min_prob, tree);
            const bool own = context.is_none();
            if (!own) to_tokens(context, "context", false, tls_tokens);
            Draft& d = tls_draft;
            {
              nb::gil_scoped_release release;
              c.speculate(handle,
                          own ? std::span<const int32_t>() : std::span<const int32_t>(tls_tokens),
                          own, p, d);
            }
            // Path drafts are chains: parents are implied (None). Probabilities
            // travel as packed float64 bytes, decoded only if read.
            nb::object parents = tree ? nb::cast(d.parents) : nb::none();
            nb::bytes probs(d.probs.data(), d.probs.size() * sizeof(double));
            return nb::make_tuple(nb::cast(d.token_ids), parents, probs, d.score, d.match_len);
          },
          nb::arg("handle"), nb::arg("context").none(), nb::arg("max_spec_tokens"),
          nb::arg("max_spec_factor"), nb::arg("max_spec_offset"), nb::arg("min_token_prob"),
          nb::arg("use_tree_spec"))
      .def(
          "speculate_batch",
          [](SuffixCache& c, nb::handle handles, nb::handle new_tokens, nb::handle contexts,
             long long max_spec_tokens, double factor, double offset, double min_prob, bool tree) {
            const SpecParams p = make_params(max_spec_tokens, factor, offset, min_prob, tree);
            // Flatten the per-request inputs in one pass, with the GIL held.
            std::vector<int64_t> hs;
            {
              nb::sequence seq = nb::borrow<nb::sequence>(handles);
              hs.reserve(nb::len(seq));
              for (nb::handle h : seq) hs.push_back(nb::cast<int64_t>(h));
            }
            const size_t n = hs.size();
            auto flatten = [&](nb::handle lists, const char* what, std::vector<int32_t>& flat,
                               std::vector<int64_t>& offsets) {
              if (!PySequence_Check(lists.ptr()) || PyUnicode_Check(lists.ptr())) {
                throw nb::type_error(
                    (std::string(what) + " must be a sequence with one token list per request")
                        .c_str());
              }
              if (static_cast<size_t>(PySequence_Size(lists.ptr())) != n) {
                throw nb::value_error((std::string(what) + " has " +
                                       std::to_string(PySequence_Size(lists.ptr())) +
                                       " entries for " + std::to_string(n) + " requests")
                                          .c_str());
              }
              offsets.assign(1, 0);
              std::vector<int32_t> one;
              for (size_t i = 0; i < n; ++i) {
                nb::object item =
                    nb::steal(PySequence_GetItem(lists.ptr(), static_cast<Py_ssize_t>(i)));
                if (!item.is_valid()) throw nb::python_error();
                const std::string name = std::string(what) + "[" + std::to_string(i) + "]";
                to_tokens(item, name.c_str(), false, one);
                flat.insert(flat.end(), one.begin(), one.end());
                offsets.push_back(static_cast<int64_t>(flat.size()));
              }
            };
            std::vector<int32_t> new_flat, ctx_flat;
            std::vector<int64_t> new_off, ctx_off;
            if (new_tokens.is_none()) {
              new_off.assign(n + 1, 0);
            } else {
              flatten(new_tokens, "new_token_ids", new_flat, new_off);
            }
            const bool own = contexts.is_none();
            if (!own) flatten(contexts, "contexts", ctx_flat, ctx_off);
            DraftBatch out;
            {
              nb::gil_scoped_release release;
              c.speculate_batch(hs, new_flat, new_off, own ? nullptr : ctx_flat.data(),
                                own ? nullptr : ctx_off.data(), p, out);
            }
            return nb::make_tuple(to_numpy(std::move(out.token_ids)),
                                  to_numpy(std::move(out.parents)), to_numpy(std::move(out.probs)),
                                  to_numpy(std::move(out.offsets)), to_numpy(std::move(out.scores)),
                                  to_numpy(std::move(out.match_lens)));
          },
          nb::arg("handles"), nb::arg("new_token_ids").none(), nb::arg("contexts").none(),
          nb::arg("max_spec_tokens"), nb::arg("max_spec_factor"), nb::arg("max_spec_offset"),
          nb::arg("min_token_prob"), nb::arg("use_tree_spec"))
      .def("num_tokens", &SuffixCache::num_tokens, nb::call_guard<nb::gil_scoped_release>())
      .def("memory_bytes", &SuffixCache::memory_bytes, nb::call_guard<nb::gil_scoped_release>())
      .def("check_integrity", &SuffixCache::check_integrity,
           nb::call_guard<nb::gil_scoped_release>());
}
