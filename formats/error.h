// The typed exception of sparq's C++ core. Loaders, converters and planners throw it;
// the C API turns it into a sparq_status at one boundary.
#ifndef SPARQ_FORMATS_ERROR_H_
#define SPARQ_FORMATS_ERROR_H_

#include <stdexcept>
#include <string>

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

}  // namespace sparq

#endif  // SPARQ_FORMATS_ERROR_H_
