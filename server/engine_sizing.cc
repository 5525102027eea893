#include "server/engine_sizing.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace xlstmd::server {

absl::Status ResolveEngineSizes(const SizingInput& in, EngineSizes* s) {
  if (s->max_batch == 0) s->max_batch = in.gpu ? 256 : 64;
  if (s->prefill_piece == 0) s->prefill_piece = in.gpu ? 512 : 128;
  if (s->prefill_budget == 0) s->prefill_budget = std::max<int64_t>(in.gpu ? 4096 : 512, s->prefill_piece);
  if (s->prefill_budget < s->prefill_piece) {
    return absl::InvalidArgumentError(absl::StrCat("--prefill-budget (", s->prefill_budget,
                                                   ") must be at least --prefill-piece (",
                                                   s->prefill_piece, ")"));
  }
  if (s->slots != 0) return absl::OkStatus();
  if (!in.gpu) {
    s->slots = 64;
    s->note = "auto: 64 slots (cpu default)";
    return absl::OkStatus();
  }
  const int64_t rows = std::max({s->max_batch, s->prefill_budget, s->prefill_piece});
  const size_t buffers = static_cast<size_t>(rows) * in.bytes_per_forward_row +
                         static_cast<size_t>(s->max_batch) * in.bytes_per_logit_row;
  const double usable = static_cast<double>(in.free_bytes) * kGpuSlotFraction -
                        static_cast<double>(buffers) - static_cast<double>(kGpuHeadroomBytes);
  const int64_t fit =
      usable > 0 && in.bytes_per_slot > 0
          ? static_cast<int64_t>(usable / static_cast<double>(in.bytes_per_slot))
          : 0;
  if (fit < 1) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "--slots auto: the device has ", in.free_bytes >> 20, " MiB free after the weights; ",
        "the forward buffers need ", buffers >> 20, " MiB and one session state ",
        in.bytes_per_slot >> 20, " MiB (plus ", kGpuHeadroomBytes >> 20,
        " MiB headroom); lower --max-batch / --prefill-budget or use a larger GPU"));
  }
  s->slots = std::min<int64_t>(fit, int64_t{1} << 20);
  s->max_batch = std::min(s->max_batch, s->slots);
  s->note = absl::StrCat("auto: ", s->slots, " slots of ", in.bytes_per_slot, " bytes in ",
                         static_cast<int64_t>(kGpuSlotFraction * 100), "% of ",
                         in.free_bytes >> 20, " MiB free, less ", buffers >> 20,
                         " MiB of forward buffers and ", kGpuHeadroomBytes >> 20,
                         " MiB headroom");
  return absl::OkStatus();
}

}  // namespace xlstmd::server
