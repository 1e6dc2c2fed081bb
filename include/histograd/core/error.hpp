// histograd::Error, the one exception type users see, and the checks that throw it.
// Every message names the op (or file), what was expected and what was given, so a
// user can fix the call without reading our source.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace histograd {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {
template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}
}  // namespace detail

// fail("matmul", "expected ", a, ", got ", b) throws Error("matmul: expected ..., got ...").
template <class... Parts>
[[noreturn]] void fail(const char* op, Parts&&... parts) {
  throw Error(detail::concat(op, ": ", std::forward<Parts>(parts)...));
}

}  // namespace histograd

// HG_CHECK(cond, op, message parts...): throw histograd::Error when cond is false.
#define HG_CHECK(cond, op, ...)                 \
  do {                                          \
    if (!(cond)) ::histograd::fail(op, __VA_ARGS__); \
  } while (0)
