// Error types and the check macro used at every boundary of the C++ core.
// The core never uses assert() for anything a caller can influence: a failed
// check throws, and the binding layer maps the type to a Python exception.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace arctic_core {

// Bad argument value (maps to Python ValueError).
class InvalidArgument : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Unknown key such as a request handle (maps to Python KeyError).
class NotFound : public std::out_of_range {
 public:
  using std::out_of_range::out_of_range;
};

// Broken internal invariant: a bug in this library (maps to RuntimeError).
class InternalError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace arctic_core

// ARCTIC_CHECK(cond, ExceptionType, message parts...): throw when cond is false.
#define ARCTIC_CHECK(cond, exc, ...)                         \
  do {                                                       \
    if (!(cond)) {                                           \
      throw exc(::arctic_core::detail::concat(__VA_ARGS__)); \
    }                                                        \
  } while (0)
