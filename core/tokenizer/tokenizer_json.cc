#include "core/tokenizer/tokenizer_json.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/base/json_file.h"
#include "core/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace xlstmd::core {
namespace {

using Json = nlohmann::json;

absl::Status Error(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

absl::Status Unsupported(absl::string_view where, absl::string_view type) {
  return absl::InvalidArgumentError(absl::StrCat("unsupported ", where, " type \"", type, "\""));
}

// obj[key] when present and not null, else nullptr.
const Json* Get(const Json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

absl::StatusOr<bool> GetBool(const Json& obj, const char* key, bool fallback,
                             absl::string_view where) {
  const Json* v = Get(obj, key);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) {
    return Error(where, absl::StrCat("\"", key, "\" must be a boolean, not ", JsonTypeName(*v)));
  }
  return v->get<bool>();
}

absl::StatusOr<std::string> GetString(const Json& obj, const char* key, absl::string_view where) {
  const Json* v = Get(obj, key);
  if (v == nullptr || !v->is_string()) {
    return Error(where, absl::StrCat("\"", key, "\" must be a string"));
  }
  return v->get<std::string>();
}

absl::StatusOr<std::string> TypeOf(const Json& obj, absl::string_view where) {
  if (!obj.is_object()) return Error(where, "must be an object");
  return GetString(obj, "type", where);
}

absl::Status ParseNormalizer(const Json& n, std::vector<NormalizationForm>* out) {
  XLSTMD_ASSIGN_OR_RETURN(const std::string type, TypeOf(n, "normalizer"));
  if (type == "NFC") {
    out->push_back(NormalizationForm::kNfc);
  } else if (type == "NFD") {
    out->push_back(NormalizationForm::kNfd);
  } else if (type == "NFKC") {
    out->push_back(NormalizationForm::kNfkc);
  } else if (type == "NFKD") {
    out->push_back(NormalizationForm::kNfkd);
  } else if (type == "Sequence") {
    const Json* list = Get(n, "normalizers");
    if (list == nullptr || !list->is_array()) {
      return Error("normalizer Sequence", "\"normalizers\" must be an array");
    }
    for (const Json& child : *list) XLSTMD_RETURN_IF_ERROR(ParseNormalizer(child, out));
  } else {
    return Unsupported("normalizer", type);
  }
  return absl::OkStatus();
}

absl::StatusOr<SplitBehavior> ParseBehavior(const std::string& b) {
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  return Error("pre_tokenizer Split", absl::StrCat("unknown behavior \"", b, "\""));
}

absl::Status ParsePreTokenizer(const Json& p, std::vector<PreTokenizerStep>* out) {
  XLSTMD_ASSIGN_OR_RETURN(const std::string type, TypeOf(p, "pre_tokenizer"));
  PreTokenizerStep step;
  if (type == "ByteLevel") {
    step.kind = PreTokenizerStep::Kind::kByteLevel;
    XLSTMD_ASSIGN_OR_RETURN(step.add_prefix_space,
                            GetBool(p, "add_prefix_space", true, "pre_tokenizer ByteLevel"));
    XLSTMD_ASSIGN_OR_RETURN(step.use_regex,
                            GetBool(p, "use_regex", true, "pre_tokenizer ByteLevel"));
  } else if (type == "Split") {
    step.kind = PreTokenizerStep::Kind::kSplit;
    const Json* pattern = Get(p, "pattern");
    if (pattern == nullptr || !pattern->is_object()) {
      return Error("pre_tokenizer Split", "\"pattern\" must be an object");
    }
    if (const Json* s = Get(*pattern, "String"); s != nullptr && s->is_string()) {
      step.pattern = s->get<std::string>();
      step.pattern_is_regex = false;
    } else if (const Json* r = Get(*pattern, "Regex"); r != nullptr && r->is_string()) {
      step.pattern = r->get<std::string>();
      step.pattern_is_regex = true;
    } else {
      return Error("pre_tokenizer Split", "\"pattern\" needs a \"String\" or \"Regex\"");
    }
    XLSTMD_ASSIGN_OR_RETURN(const std::string behavior,
                            GetString(p, "behavior", "pre_tokenizer Split"));
    XLSTMD_ASSIGN_OR_RETURN(step.behavior, ParseBehavior(behavior));
    XLSTMD_ASSIGN_OR_RETURN(step.invert, GetBool(p, "invert", false, "pre_tokenizer Split"));
  } else if (type == "Sequence") {
    const Json* list = Get(p, "pretokenizers");
    if (list == nullptr || !list->is_array()) {
      return Error("pre_tokenizer Sequence", "\"pretokenizers\" must be an array");
    }
    for (const Json& child : *list) XLSTMD_RETURN_IF_ERROR(ParsePreTokenizer(child, out));
    return absl::OkStatus();
  } else {
    return Unsupported("pre_tokenizer", type);
  }
  out->push_back(std::move(step));
  return absl::OkStatus();
}

// Components that must be absent or neutral for a plain byte-level BPE.
absl::Status CheckModelOptions(const Json& m) {
  if (const Json* d = Get(m, "dropout"); d != nullptr) {
    if (!d->is_number() || d->get<double>() != 0.0) {
      return Error("model", "BPE dropout is not supported (it makes encoding random)");
    }
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const Json* v = Get(m, key);
    if (v != nullptr && (!v->is_string() || !v->get_ref<const std::string&>().empty())) {
      return Error("model", absl::StrCat("\"", key, "\" is not supported by byte-level BPE"));
    }
  }
  XLSTMD_ASSIGN_OR_RETURN(const bool byte_fallback, GetBool(m, "byte_fallback", false, "model"));
  if (byte_fallback) return Error("model", "\"byte_fallback\" is not supported");
  return absl::OkStatus();
}

absl::Status ParseModel(const Json& m, BpeModelSpec* spec) {
  if (!m.is_object()) return Error("model", "must be an object");
  if (const Json* type = Get(m, "type"); type != nullptr) {
    if (!type->is_string()) return Error("model", "\"type\" must be a string");
    if (type->get<std::string>() != "BPE") return Unsupported("model", type->get<std::string>());
  }
  XLSTMD_RETURN_IF_ERROR(CheckModelOptions(m));
  XLSTMD_ASSIGN_OR_RETURN(spec->ignore_merges, GetBool(m, "ignore_merges", false, "model"));
  if (const Json* unk = Get(m, "unk_token"); unk != nullptr) {
    if (!unk->is_string()) return Error("model", "\"unk_token\" must be a string");
    spec->unk_token = unk->get<std::string>();
  }
  const Json* vocab = Get(m, "vocab");
  if (vocab == nullptr || !vocab->is_object()) return Error("model", "\"vocab\" must be an object");
  spec->vocab.reserve(vocab->size());
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > INT32_MAX) {
      return Error("model.vocab", absl::StrCat("id of \"", it.key(), "\" is not a valid id"));
    }
    spec->vocab.emplace_back(it.key(), static_cast<int32_t>(it->get<int64_t>()));
  }
  const Json* merges = Get(m, "merges");
  if (merges == nullptr || !merges->is_array()) {
    return Error("model", "\"merges\" must be an array");
  }
  spec->merges.reserve(merges->size());
  for (size_t i = 0; i < merges->size(); ++i) {
    const Json& merge = (*merges)[i];
    if (merge.is_string()) {  // "left right" (tokenizers < 0.20)
      const std::string& s = merge.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        return Error("model.merges", absl::StrCat("entry ", i, " is not \"left right\""));
      }
      spec->merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {  // ["left", "right"] (tokenizers >= 0.20)
      spec->merges.emplace_back(merge[0].get<std::string>(), merge[1].get<std::string>());
    } else {
      return Error("model.merges", absl::StrCat("entry ", i, " is neither a string nor a pair"));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseAddedTokens(const Json& list, std::vector<AddedToken>* out) {
  if (!list.is_array()) return Error("added_tokens", "must be an array");
  for (size_t i = 0; i < list.size(); ++i) {
    const Json& t = list[i];
    const std::string where = absl::StrCat("added_tokens[", i, "]");
    if (!t.is_object()) return Error(where, "must be an object");
    AddedToken token;
    const Json* id = Get(t, "id");
    if (id == nullptr || !id->is_number_integer() || id->get<int64_t>() < 0 ||
        id->get<int64_t>() > INT32_MAX) {
      return Error(where, "\"id\" must be a non-negative integer");
    }
    token.id = static_cast<int32_t>(id->get<int64_t>());
    XLSTMD_ASSIGN_OR_RETURN(token.content, GetString(t, "content", where));
    if (token.content.empty()) return Error(where, "\"content\" is empty");
    XLSTMD_ASSIGN_OR_RETURN(token.special, GetBool(t, "special", false, where));
    XLSTMD_ASSIGN_OR_RETURN(token.lstrip, GetBool(t, "lstrip", false, where));
    XLSTMD_ASSIGN_OR_RETURN(token.rstrip, GetBool(t, "rstrip", false, where));
    XLSTMD_ASSIGN_OR_RETURN(token.single_word, GetBool(t, "single_word", false, where));
    // HF's default: special tokens are matched in raw text, others after normalization.
    XLSTMD_ASSIGN_OR_RETURN(token.normalized, GetBool(t, "normalized", !token.special, where));
    out->push_back(std::move(token));
  }
  return absl::OkStatus();
}

absl::Status CheckDecoderAndPostProcessor(const Json& root) {
  const Json* decoder = Get(root, "decoder");
  if (decoder == nullptr) {
    return Error("decoder", "missing; byte-level BPE needs a ByteLevel decoder");
  }
  XLSTMD_ASSIGN_OR_RETURN(const std::string decoder_type, TypeOf(*decoder, "decoder"));
  if (decoder_type != "ByteLevel") return Unsupported("decoder", decoder_type);
  if (const Json* post = Get(root, "post_processor"); post != nullptr) {
    XLSTMD_ASSIGN_OR_RETURN(const std::string post_type, TypeOf(*post, "post_processor"));
    // ByteLevel only trims offsets. Processors that add BOS/EOS ids are not run: the chat
    // template owns BOS, so accepting them silently would drop ids the file asks for.
    if (post_type != "ByteLevel") return Unsupported("post_processor", post_type);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TokenizerJsonSpec> ParseTokenizerJson(std::string_view json_text) {
  XLSTMD_ASSIGN_OR_RETURN(const Json root, ParseStrictJson(json_text));
  if (!root.is_object()) return Error("tokenizer.json", "top level must be an object");
  TokenizerJsonSpec spec;
  if (const Json* n = Get(root, "normalizer"); n != nullptr) {
    XLSTMD_RETURN_IF_ERROR(ParseNormalizer(*n, &spec.normalizer));
  }
  const Json* pre = Get(root, "pre_tokenizer");
  if (pre != nullptr) XLSTMD_RETURN_IF_ERROR(ParsePreTokenizer(*pre, &spec.pre_tokenizer));
  if (spec.pre_tokenizer.empty() ||
      spec.pre_tokenizer.back().kind != PreTokenizerStep::Kind::kByteLevel) {
    return Error("pre_tokenizer", "byte-level BPE needs a ByteLevel pre-tokenizer as last step");
  }
  const Json* model = Get(root, "model");
  if (model == nullptr) return Error("tokenizer.json", "\"model\" is missing");
  XLSTMD_RETURN_IF_ERROR(ParseModel(*model, &spec.model));
  if (const Json* added = Get(root, "added_tokens"); added != nullptr) {
    XLSTMD_RETURN_IF_ERROR(ParseAddedTokens(*added, &spec.added_tokens));
  }
  XLSTMD_RETURN_IF_ERROR(CheckDecoderAndPostProcessor(root));
  return spec;
}

}  // namespace xlstmd::core
