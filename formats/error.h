// The typed exception of sparq's C++ core. Loaders, converters and planners throw it;
// the C API turns it into a sparq_status at one boundary.
#ifndef SPARQ_FORMATS_ERROR_H_
#define SPARQ_FORMATS_ERROR_H_

#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>

#include "sparq/export.h"

namespace sparq {

enum class Status : int {
  kOk = 0,
  kInvalidArgument = 1,
  kUnsupported = 2,
  kFormatError = 3,
  kOutOfMemory = 4,
  kInternal = 5,
};

class SPARQ_API Error : public std::runtime_error {
 public:
  Error(Status status, const std::string& message) : std::runtime_error(message), status_(status) {}
  Status status() const { return status_; }

 private:
  Status status_;
};

// Text quoted from an untrusted file, safe to print: control bytes (and with
// `ascii_only`, backslashes and bytes from 0x7f up) become \xNN; at most `max_chars`
// input bytes are kept, then "...".
inline std::string escape_bytes(std::string_view s, bool ascii_only,
                                size_t max_chars = std::string::npos) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < s.size() && i < max_chars; ++i) {
    const unsigned char ch = static_cast<unsigned char>(s[i]);
    const bool plain =
        ascii_only ? ch >= 0x20 && ch < 0x7f && ch != '\\' : ch >= 0x20 && ch != 0x7f;
    if (plain) {
      out += static_cast<char>(ch);
    } else {
      out += "\\x";
      out += hex[ch >> 4];
      out += hex[ch & 15];
    }
  }
  if (s.size() > max_chars) out += "...";
  return out;
}

}  // namespace sparq

#endif  // SPARQ_FORMATS_ERROR_H_
