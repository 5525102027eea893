#include "core/base/json_file.h"

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace xlstmd::core {
namespace {

using Json = nlohmann::json;

// Builds the DOM from SAX events. nlohmann's own DOM builders cannot report duplicate keys,
// and its callback parser cannot abort with a reason, hence this small builder. Parsing is
// iterative inside nlohmann, so depth is bounded only by the check here.
class StrictDomBuilder final : public nlohmann::json_sax<Json> {
 public:
  explicit StrictDomBuilder(int max_depth) : max_depth_(max_depth) {}

  bool null() override { return Add(Json(nullptr)); }
  bool boolean(bool v) override { return Add(Json(v)); }
  bool number_integer(number_integer_t v) override { return Add(Json(v)); }
  bool number_unsigned(number_unsigned_t v) override { return Add(Json(v)); }
  bool number_float(number_float_t v, const string_t& /*text*/) override { return Add(Json(v)); }
  bool string(string_t& v) override { return Add(Json(std::move(v))); }
  bool binary(binary_t& /*v*/) override { return Fail("binary values are not JSON"); }

  bool start_object(std::size_t /*elements*/) override { return Open(Json::object()); }
  bool start_array(std::size_t /*elements*/) override { return Open(Json::array()); }
  bool end_object() override { return Close(); }
  bool end_array() override { return Close(); }

  bool key(string_t& k) override {
    Json& obj = *stack_.back();
    if (obj.contains(k)) {
      return Fail(absl::StrCat("duplicate key \"", k, "\""));
    }
    // std::map nodes never move, so the slot stays valid while its value is being parsed.
    pending_slot_ = &obj[k];
    return true;
  }

  bool parse_error(std::size_t /*position*/, const std::string& /*last_token*/,
                   const nlohmann::json::exception& ex) override {
    // ex.what() already carries "[json.exception.parse_error.101] parse error at line L,
    // column C: ...", which is what a person fixing the file needs.
    return Fail(ex.what());
  }

  Json TakeRoot() { return std::move(root_); }
  const std::string& error() const { return error_; }

 private:
  // Places `v` where the grammar says it goes and returns its address. Pointers into arrays
  // stay valid because an array only grows after its current child is finished.
  Json* Place(Json v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    Json& top = *stack_.back();
    if (top.is_array()) {
      top.push_back(std::move(v));
      return &top.back();
    }
    *pending_slot_ = std::move(v);
    return pending_slot_;
  }

  bool Add(Json v) {
    Place(std::move(v));
    return true;
  }

  bool Open(Json container) {
    if (static_cast<int>(stack_.size()) >= max_depth_) {
      return Fail(absl::StrCat("JSON nested deeper than ", max_depth_, " levels"));
    }
    stack_.push_back(Place(std::move(container)));
    return true;
  }

  bool Close() {
    stack_.pop_back();
    return true;
  }

  bool Fail(std::string why) {
    if (error_.empty()) error_ = std::move(why);
    return false;
  }

  const int max_depth_;
  Json root_;
  std::vector<Json*> stack_;
  Json* pending_slot_ = nullptr;
  std::string error_;
};

}  // namespace

absl::StatusOr<std::string> ReadSmallFile(const std::filesystem::path& path,
                                          std::uintmax_t max_bytes) {
  std::error_code ec;
  const std::filesystem::file_status st = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(st)) {
    if (!ec || ec == std::errc::no_such_file_or_directory) {
      return absl::NotFoundError(absl::StrCat(path.string(), ": no such file"));
    }
    return absl::Status(absl::ErrnoToStatusCode(ec.value()),
                        absl::StrCat(path.string(), ": ", ec.message()));
  }
  if (!std::filesystem::is_regular_file(st)) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": not a regular file"));
  }
  const std::uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) {
    return absl::Status(absl::ErrnoToStatusCode(ec.value()),
                        absl::StrCat(path.string(), ": ", ec.message()));
  }
  if (size > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": ", size, " bytes is over the limit of ", max_bytes));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    return absl::Status(absl::ErrnoToStatusCode(err),
                        absl::StrCat(path.string(), ": cannot open: ", std::strerror(err)));
  }
  std::string text(static_cast<size_t>(size), '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.bad()) return absl::UnavailableError(absl::StrCat(path.string(), ": read failed"));
  // A short read means the file shrank meanwhile; keep only what was really read.
  text.resize(static_cast<size_t>(in.gcount()));
  return text;
}

absl::StatusOr<nlohmann::json> ParseStrictJson(std::string_view text, int max_depth) {
  StrictDomBuilder builder(max_depth);
  const bool ok = Json::sax_parse(text.begin(), text.end(), &builder,
                                  nlohmann::json::input_format_t::json, /*strict=*/true);
  if (!ok) {
    return absl::InvalidArgumentError(builder.error().empty() ? std::string("invalid JSON")
                                                              : builder.error());
  }
  return builder.TakeRoot();
}

absl::StatusOr<nlohmann::json> ParseStrictJsonObject(std::string_view text,
                                                     absl::string_view source) {
  absl::StatusOr<Json> doc = ParseStrictJson(text);
  if (!doc.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": not valid JSON: ", doc.status().message()));
  }
  if (!doc->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": expected a JSON object, got ", JsonTypeName(*doc)));
  }
  return doc;
}

const char* JsonTypeName(const nlohmann::json& j) {
  switch (j.type()) {
    case Json::value_t::null:
      return "null";
    case Json::value_t::boolean:
      return "boolean";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
      return "integer";
    case Json::value_t::number_float:
      return "number";
    case Json::value_t::string:
      return "string";
    case Json::value_t::object:
      return "object";
    case Json::value_t::array:
      return "array";
    case Json::value_t::binary:
      return "binary";
    case Json::value_t::discarded:
      return "discarded";
  }
  return "unknown";
}

}  // namespace xlstmd::core
