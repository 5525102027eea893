// config.json: any bytes parse to a validated config or an error naming the field.
#include <string>

#include "core/model/config.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = xlstmd::core::ParseModelConfig(text, "fuzz/config.json");
  if (config.ok() && (config->embedding_dim <= 0 || config->num_blocks <= 0 ||
                      config->num_heads <= 0 || config->vocab_size <= 0)) {
    __builtin_trap();  // validation let a useless config through
  }
  return 0;
}

namespace xlstmd::fuzz {

std::vector<std::string> FuzzSeeds() {
  std::vector<std::string> seeds;
  for (const char* model : {"xlstm-large-a1", "xlstm-large-a1-bf16", "xlstm-paper-b1"}) {
    std::string text = SharedFile(std::string("golden/") + model + "/config.json");
    if (!text.empty()) seeds.push_back(std::move(text));
  }
  // The aliases and nulls the parser documents, and the edges of its ranges.
  seeds.push_back(R"({"model_type":"xlstm","vocab_size":257,"hidden_size":64,)"
                  R"("num_hidden_layers":2,"num_heads":4,"gate_soft_cap":null})");
  seeds.push_back(R"({"model_type":"xlstm","vocab_size":1,"embedding_dim":8,"num_blocks":1,)"
                  R"("num_heads":1,"qk_dim_factor":0.5,"v_dim_factor":1.0,)"
                  R"("ffn_proj_factor":2.667,"ffn_round_up_to_multiple_of":64})");
  return seeds;
}

}  // namespace xlstmd::fuzz
