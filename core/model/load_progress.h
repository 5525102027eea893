// LoadProgress: what a model load has done so far, reported while its weights are converted
// and uploaded, so a caller can log each finished shard and draw a progress bar. core/ only
// counts; how to show it is the caller's business.
#ifndef XLSTMD_CORE_MODEL_LOAD_PROGRESS_H_
#define XLSTMD_CORE_MODEL_LOAD_PROGRESS_H_

#include <cstdint>
#include <functional>
#include <string>

namespace xlstmd::core {

struct LoadProgress {
  std::string file;        // the shard this report is about (its path)
  bool file_done = false;  // true once: every tensor read from `file` is uploaded
  int files_done = 0;
  int files_total = 0;
  uint64_t file_bytes = 0;   // bytes read from `file` in all
  uint64_t bytes_done = 0;   // checkpoint bytes uploaded so far, over all shards
  uint64_t bytes_total = 0;
};

// Called after every uploaded matrix and vector, one call at a time (the uploader serialises
// them), from the uploader's threads: keep it quick.
using LoadProgressFn = std::function<void(const LoadProgress&)>;

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_MODEL_LOAD_PROGRESS_H_
