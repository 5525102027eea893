#include "server/http_request.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace xlstmd::server {
namespace {

// RFC 9110 token characters (method and header names).
bool IsTokenChar(char c) {
  if (absl::ascii_isalnum(static_cast<unsigned char>(c))) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

bool IsToken(absl::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!IsTokenChar(c)) return false;
  }
  return true;
}

// Visible ASCII only: no spaces, controls or raw non-ASCII bytes in a request target.
bool IsTargetChar(char c) { return c > 0x20 && c < 0x7f; }

// Field values: visible ASCII, blanks, and obs-text (bytes >= 0x80, kept opaque); never a
// control character (a bare CR or LF, or NUL, is how header injection starts).
bool IsFieldValueChar(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u == '\t' || u >= 0x20 ? u != 0x7f : false;
}

HeadParse Fail(int status, std::string error) {
  HeadParse p;
  p.status = status;
  p.error = std::move(error);
  return p;
}

}  // namespace

const std::string* HttpRequest::header(absl::string_view lower_name) const {
  for (const auto& [name, value] : headers) {
    if (name == lower_name) return &value;
  }
  return nullptr;
}

bool HttpRequest::keep_alive() const {
  bool close = false, keep = false;
  for (const auto& [name, value] : headers) {
    if (name != "connection") continue;
    for (absl::string_view opt : absl::StrSplit(value, ',')) {
      opt = absl::StripAsciiWhitespace(opt);
      if (absl::EqualsIgnoreCase(opt, "close")) close = true;
      if (absl::EqualsIgnoreCase(opt, "keep-alive")) keep = true;
    }
  }
  if (close) return false;
  return minor_version >= 1 || keep;
}

HeadParse ParseRequestHead(absl::string_view head, const HttpLimits& limits, HttpRequest* out) {
  if (head.size() > limits.max_header_bytes) {
    return Fail(431, absl::StrCat("request head over ", limits.max_header_bytes, " bytes"));
  }
  const size_t line_end = head.find("\r\n");
  if (line_end == absl::string_view::npos) return Fail(400, "malformed request line");
  const absl::string_view line = head.substr(0, line_end);
  // METHOD SP target SP HTTP/1.x, exactly one space between.
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == absl::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == absl::string_view::npos || line.find(' ', sp2 + 1) != absl::string_view::npos) {
    return Fail(400, "malformed request line");
  }
  const absl::string_view method = line.substr(0, sp1);
  const absl::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const absl::string_view version = line.substr(sp2 + 1);
  if (!IsToken(method)) return Fail(400, "malformed method");
  if (!absl::StartsWith(version, "HTTP/1.") || version.size() != 8 ||
      (version[7] != '0' && version[7] != '1')) {
    if (absl::StartsWith(version, "HTTP/") && version.size() == 8) {
      return Fail(505, "only HTTP/1.0 and HTTP/1.1 are served");
    }
    return Fail(400, "malformed HTTP version");
  }
  if (target.empty() || target[0] != '/') {
    return Fail(400, "the request target must be a path starting with '/'");
  }
  for (char c : target) {
    if (!IsTargetChar(c)) return Fail(400, "the request target holds a forbidden character");
  }
  out->method = std::string(method);
  out->target = std::string(target);
  const size_t q = target.find('?');
  out->path = std::string(target.substr(0, q));
  out->query = q == absl::string_view::npos ? "" : std::string(target.substr(q + 1));
  out->minor_version = version[7] - '0';
  out->headers.clear();

  HeadParse result;
  bool have_length = false;
  absl::string_view rest = head.substr(line_end + 2);
  while (!rest.empty()) {
    const size_t end = rest.find("\r\n");
    if (end == absl::string_view::npos) return Fail(400, "a header line does not end in CRLF");
    const absl::string_view field = rest.substr(0, end);
    rest.remove_prefix(end + 2);
    if (static_cast<int>(out->headers.size()) >= limits.max_headers) {
      return Fail(431, absl::StrCat("more than ", limits.max_headers, " header fields"));
    }
    // No obsolete line folding, no blank before the colon (RFC 9112 5.1 and 5.2).
    const size_t colon = field.find(':');
    if (colon == absl::string_view::npos) return Fail(400, "a header line has no ':'");
    const absl::string_view name = field.substr(0, colon);
    if (!IsToken(name)) return Fail(400, "malformed header name");
    const absl::string_view value = absl::StripAsciiWhitespace(field.substr(colon + 1));
    for (char c : value) {
      if (!IsFieldValueChar(c)) return Fail(400, "a header value holds a control character");
    }
    std::string lower(name);
    absl::AsciiStrToLower(&lower);
    if (lower == "content-length") {
      uint64_t n = 0;
      if (value.empty() || value.size() > 18 || !absl::SimpleAtoi(value, &n) ||
          !absl::ascii_isdigit(static_cast<unsigned char>(value[0]))) {
        return Fail(400, "malformed Content-Length");
      }
      if (have_length && n != result.content_length) {
        return Fail(400, "conflicting Content-Length headers");
      }
      have_length = true;
      result.content_length = n;
    } else if (lower == "transfer-encoding") {
      // Request bodies are JSON of a known size; refusing chunked bodies also rules out the
      // Content-Length / Transfer-Encoding smuggling ambiguities.
      return Fail(411, "send the request body with a Content-Length (no Transfer-Encoding)");
    } else if (lower == "expect") {
      if (!absl::EqualsIgnoreCase(value, "100-continue")) {
        return Fail(417, "only 'Expect: 100-continue' is understood");
      }
      result.expect_continue = true;
    }
    out->headers.emplace_back(std::move(lower), std::string(value));
  }
  if (out->minor_version == 1 && out->header("host") == nullptr) {
    return Fail(400, "an HTTP/1.1 request needs a Host header");
  }
  if (result.content_length > limits.max_body_bytes) {
    return Fail(413, absl::StrCat("request body over ", limits.max_body_bytes, " bytes"));
  }
  if (!have_length) result.expect_continue = false;
  return result;
}

const char* HttpReasonPhrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

}  // namespace xlstmd::server
