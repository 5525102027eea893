// One HTTP/1.x request as the daemon's own listeners see it (http_listener.h), and the parser
// of its head. The parser is strict on purpose: the listeners face browsers, proxies and
// scanners, and anything it does not fully understand is refused with the status a client
// can act on (400, 413, 414, 431, 501, 505) instead of being guessed at.
//
// Pure functions and plain data; any thread.
#ifndef XLSTMD_SERVER_HTTP_REQUEST_H_
#define XLSTMD_SERVER_HTTP_REQUEST_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace xlstmd::server {

struct HttpLimits {
  size_t max_header_bytes = 16 << 10;  // request line + headers, CRLFs included
  int max_headers = 64;
  size_t max_body_bytes = 1 << 20;
};

struct HttpRequest {
  std::string method;  // as sent: methods are case-sensitive
  std::string target;  // origin-form: path and query
  std::string path;    // target up to '?'
  std::string query;   // after '?', without it
  int minor_version = 1;  // HTTP/1.<minor>
  // Names lower-cased, values with surrounding blanks removed, in the order sent.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string peer;  // the client's address, for logs

  // The first value of header `lower_name`, or nullptr.
  const std::string* header(absl::string_view lower_name) const;
  // Whether the connection may carry another request after this one (HTTP/1.1 unless
  // `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`).
  bool keep_alive() const;
};

struct HeadParse {
  int status = 0;         // 0 = a valid head; else the HTTP status to answer with
  std::string error;      // why, for the response body
  uint64_t content_length = 0;
  bool expect_continue = false;  // the client waits for "100 Continue" before its body
};

// Parses `head`: the request line and header lines, each ending in CRLF, without the empty
// line that ends the head. Fills `out` (not its body or peer).
HeadParse ParseRequestHead(absl::string_view head, const HttpLimits& limits, HttpRequest* out);

// "OK", "Not Found", ...; "Unknown" for a code it does not know.
const char* HttpReasonPhrase(int status);

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_HTTP_REQUEST_H_
