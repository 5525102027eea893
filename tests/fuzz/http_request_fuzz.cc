// The head parser of the daemon's HTTP listeners (server/http_request.h): any bytes are
// either refused with a 4xx/5xx status or parsed into a request whose parts keep the
// parser's promises (a path starting with '/', lower-case header names, no control
// characters in values, a body length within the cap).
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "server/http_request.h"
#include "tests/fuzz/fuzz_target.h"

namespace {

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "http_request_fuzz: %s\n", what);
  __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string head(reinterpret_cast<const char*>(data), size);
  xlstmd::server::HttpLimits limits;
  limits.max_header_bytes = 4096;
  limits.max_headers = 16;
  limits.max_body_bytes = 1 << 16;
  xlstmd::server::HttpRequest req;
  const xlstmd::server::HeadParse p = xlstmd::server::ParseRequestHead(head, limits, &req);
  if (p.status != 0) {
    if (p.status < 400 || p.status > 599 || p.error.empty()) Fail("a refusal without a status");
    return 0;
  }
  if (req.path.empty() || req.path[0] != '/') Fail("a path not starting with '/'");
  if (req.target.compare(0, req.path.size(), req.path) != 0) Fail("the path is not the target's");
  if (req.minor_version != 0 && req.minor_version != 1) Fail("an HTTP version beyond 1.1");
  if (p.content_length > limits.max_body_bytes) Fail("a body over the cap accepted");
  if (static_cast<int>(req.headers.size()) > limits.max_headers) Fail("too many headers kept");
  for (const auto& [name, value] : req.headers) {
    if (name.empty()) Fail("an empty header name");
    for (char c : name) {
      if (absl::ascii_isupper(static_cast<unsigned char>(c))) Fail("an upper-case header name");
    }
    for (char c : value) {
      if (c == '\r' || c == '\n' || c == '\0') Fail("a control character in a header value");
    }
  }
  (void)req.keep_alive();
  return 0;
}

namespace xlstmd::fuzz {

std::vector<std::string> FuzzSeeds() {
  return {
      "GET /healthz HTTP/1.1\r\nHost: a\r\n",
      "GET /metrics?x=1 HTTP/1.0\r\nConnection: keep-alive\r\n",
      "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
      "Content-Length: 42\r\nAuthorization: Bearer k\r\nExpect: 100-continue\r\n",
      "POST /v1/sessions/abc/turns HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n"
      "Content-Length: 2\r\nOrigin: https://app.example.com\r\n",
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n",
      "GET / HTTP/2.0\r\nHost: a\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\n folded: x\r\n",
      "OPTIONS /v1/models HTTP/1.1\r\nHost: a\r\nAccess-Control-Request-Method: POST\r\n",
  };
}

}  // namespace xlstmd::fuzz
