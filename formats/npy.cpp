#include "formats/npy.h"

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>

#include "formats/error.h"

namespace sparq {
namespace {

[[noreturn]] void bad(const std::string& path, const std::string& what) {
  throw Error(Status::kFormatError, path + ": not a supported .npy file: " + what);
}

// Header text quoted in an error: at most 64 characters, ASCII only, so a malformed
// header never writes raw bytes to a terminal.
std::string quoted(const std::string& s) { return escape_bytes(s, /*ascii_only=*/true, 64); }

// The value of `key` in the header dict, as the raw text up to the next ',' or '}'
// (or the parenthesized tuple for 'shape').
std::string field(const std::string& header, const std::string& key, const std::string& path) {
  const size_t k = header.find("'" + key + "'");
  if (k == std::string::npos) bad(path, "header has no '" + key + "'");
  size_t v = header.find(':', k);
  if (v == std::string::npos) bad(path, "malformed header");
  ++v;
  while (v < header.size() && header[v] == ' ') ++v;
  if (v < header.size() && header[v] == '(') {
    const size_t e = header.find(')', v);
    if (e == std::string::npos) bad(path, "malformed shape");
    return header.substr(v, e - v + 1);
  }
  const size_t e = header.find_first_of(",}", v);
  if (e == std::string::npos) bad(path, "malformed header");
  std::string r = header.substr(v, e - v);
  while (!r.empty() && r.back() == ' ') r.pop_back();
  return r;
}

}  // namespace

Constant read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw Error(Status::kInvalidArgument, "cannot open '" + path + "'");
  const uint64_t size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  char magic[8];
  if (size < 10 || !in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0)
    bad(path, "wrong magic");
  uint64_t header_len = 0, pre = 0;
  if (magic[6] == 1) {
    uint8_t b[2];
    in.read(reinterpret_cast<char*>(b), 2);
    header_len = b[0] | (b[1] << 8);
    pre = 10;
  } else if (magic[6] == 2 || magic[6] == 3) {
    uint8_t b[4];
    in.read(reinterpret_cast<char*>(b), 4);
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint64_t>(b[3]) << 24);
    pre = 12;
  } else {
    bad(path, "unknown format version");
  }
  if (!in || header_len > size - pre || header_len > (1u << 20)) bad(path, "truncated header");
  std::string header(header_len, '\0');
  in.read(&header[0], static_cast<std::streamsize>(header_len));
  const std::string descr = field(header, "descr", path);
  Constant c;
  if (descr == "'<f4'") c.type = ElemType::kF32;
  else if (descr == "'<f8'") c.type = ElemType::kF64;
  else if (descr == "'<i8'") c.type = ElemType::kI64;
  else if (descr == "'<i4'") c.type = ElemType::kI32;
  else if (descr == "'|i1'") c.type = ElemType::kS8;
  else if (descr == "'|u1'") c.type = ElemType::kU8;
  else if (descr == "'|b1'") c.type = ElemType::kBool;
  else
    bad(path,
        "dtype " + quoted(descr) + " is not supported (use int64, int32, float32 or float64)");
  if (field(header, "fortran_order", path) != "False") bad(path, "Fortran order is not supported");
  const std::string shape = field(header, "shape", path);
  uint64_t elems = 1;
  size_t i = 1;
  while (i < shape.size()) {
    while (i < shape.size() && (shape[i] == ' ' || shape[i] == ',')) ++i;
    if (i >= shape.size() || shape[i] == ')') break;
    if (shape[i] < '0' || shape[i] > '9') bad(path, "malformed shape " + quoted(shape));
    uint64_t d = 0;
    while (i < shape.size() && shape[i] >= '0' && shape[i] <= '9') {
      if (d > (uint64_t{1} << 40)) bad(path, "dimension too large");
      d = d * 10 + static_cast<uint64_t>(shape[i] - '0');
      ++i;
    }
    if (__builtin_mul_overflow(elems, d, &elems) || elems > (uint64_t{1} << 36))
      bad(path, "too many elements");
    c.shape.push_back(static_cast<int64_t>(d));
  }
  const uint64_t bytes = elems * elem_type_size(c.type);
  if (size - pre - header_len != bytes) {
    bad(path, "data has " + std::to_string(size - pre - header_len) + " bytes, the shape needs " +
                  std::to_string(bytes));
  }
  c.bytes.resize(bytes);
  if (bytes &&
      !in.read(reinterpret_cast<char*>(c.bytes.data()), static_cast<std::streamsize>(bytes))) {
    bad(path, "truncated data");
  }
  return c;
}

void write_npy(const std::string& path, const Constant& c) {
  const char* descr = nullptr;
  switch (c.type) {
    case ElemType::kF32: descr = "<f4"; break;
    case ElemType::kF64: descr = "<f8"; break;
    case ElemType::kI64: descr = "<i8"; break;
    case ElemType::kI32: descr = "<i4"; break;
    case ElemType::kS8: descr = "|i1"; break;
    case ElemType::kU8: descr = "|u1"; break;
    case ElemType::kBool: descr = "|b1"; break;
  }
  std::string shape = "(";
  for (size_t i = 0; i < c.shape.size(); ++i) shape += std::to_string(c.shape[i]) + ",";
  if (c.shape.size() > 1) shape.pop_back();
  shape += ")";
  std::string header =
      std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xFF);
  out += static_cast<char>((header.size() >> 8) & 0xFF);
  out += header;
  // raw(): the data may be a view into a mapped file rather than `bytes`.
  const size_t data_bytes = static_cast<size_t>(c.elements()) * elem_type_size(c.type);
  out.append(reinterpret_cast<const char*>(c.raw()), data_bytes);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw Error(Status::kInvalidArgument, "cannot write '" + path + "'");
    f.write(out.data(), static_cast<std::streamsize>(out.size()));
    if (!f) {
      f.close();
      std::remove(tmp.c_str());
      throw Error(Status::kInvalidArgument, "cannot write '" + path + "'");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error(Status::kInvalidArgument, "cannot write '" + path + "'");
  }
}

}  // namespace sparq
