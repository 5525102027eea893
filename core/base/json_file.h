// Reading untrusted JSON model files (config.json, safetensors headers, shard indexes).
//
// ReadSmallFile reads a whole file with a size cap. ParseStrictJson parses with
// nlohmann::json without exceptions and adds two checks nlohmann lacks:
// duplicate object keys are an error (nlohmann would silently keep the last one, so a file
// naming a tensor twice would load whichever came last), and nesting deeper than
// `max_depth` is an error (no legitimate model file nests more than a few levels).
//
// Internal to core/: the result type exposes nlohmann, which every core target that includes
// this header links privately (base, model, tokenizer).
// Thread-compatible; no state.
#ifndef XLSTMD_CORE_BASE_JSON_FILE_H_
#define XLSTMD_CORE_BASE_JSON_FILE_H_

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace xlstmd::core {

// The bytes of `path`. NotFound when it does not exist, InvalidArgument when it is not a
// regular file or is larger than `max_bytes`, the errno-derived code otherwise; every
// message names the path.
absl::StatusOr<std::string> ReadSmallFile(const std::filesystem::path& path,
                                          std::uintmax_t max_bytes);

// Returns the parsed document, or InvalidArgument whose message says what is wrong and where
// (byte offset / key) but not which file: callers prefix their own source name.
absl::StatusOr<nlohmann::json> ParseStrictJson(std::string_view text, int max_depth = 32);

// ParseStrictJson for documents whose top level must be an object. Errors are
// InvalidArgument prefixed with `source`: "<source>: not valid JSON: ..." or
// "<source>: expected a JSON object, got <type>".
absl::StatusOr<nlohmann::json> ParseStrictJsonObject(std::string_view text,
                                                     absl::string_view source);

// "string", "integer", "object", ... for error messages.
const char* JsonTypeName(const nlohmann::json& j);

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_BASE_JSON_FILE_H_
