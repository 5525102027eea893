// tokenizer_corpus_gen: writes CorpusGenerator output as JSON lines (one JSON string each).
//   tokenizer_corpus_gen --count N [--seed S]              N test strings, all categories
//   tokenizer_corpus_gen --total-bytes B [--doc-bytes D]   ~B bytes of ~D-byte documents
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "nlohmann/json.hpp"
#include "tests/tokenizer/corpus_gen.h"

int main(int argc, char** argv) {
  uint64_t count = 0, seed = 1, total_bytes = 0, doc_bytes = 2000;
  for (int i = 1; i + 1 < argc; i += 2) {
    const uint64_t v = std::strtoull(argv[i + 1], nullptr, 10);
    if (std::strcmp(argv[i], "--count") == 0) {
      count = v;
    } else if (std::strcmp(argv[i], "--seed") == 0) {
      seed = v;
    } else if (std::strcmp(argv[i], "--total-bytes") == 0) {
      total_bytes = v;
    } else if (std::strcmp(argv[i], "--doc-bytes") == 0) {
      doc_bytes = v;
    } else {
      std::fprintf(stderr, "tokenizer_corpus_gen: unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  xlstmd::testing::CorpusGenerator gen(seed);
  std::string out;
  auto emit = [&out](const std::string& s) {
    out += nlohmann::json(s).dump();
    out += '\n';
  };
  for (uint64_t i = 0; i < count; ++i) emit(gen.Next());
  for (uint64_t written = 0; written < total_bytes;) {
    const std::string doc = gen.Document(doc_bytes);
    written += doc.size();
    emit(doc);
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}
