#include "server/model_loader.h"

#include <chrono>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/base/progress_bar.h"
#include "core/base/status_macros.h"
#include "core/model/checkpoint.h"
#include "core/model/random_model.h"
#include "core/model/weight_format.h"
#include "core/tokenizer/chat_template.h"
#include "core/tokenizer/tokenizer.h"
#include "kernels/backend_registry.h"
#include "server/engine_sizing.h"
#include "spdlog/spdlog.h"

namespace xlstmd::server {
namespace {

bool IsDirectory(const std::filesystem::path& p) {
  std::error_code ec;
  return std::filesystem::is_directory(p, ec);
}

// Wraps a load error so the one startup line says which file or step failed.
absl::Status Annotate(const absl::Status& s, const std::string& what) {
  return absl::Status(s.code(), absl::StrCat(what, ": ", s.message()));
}

}  // namespace

std::filesystem::path SelfExePath() {
  std::error_code ec;
  std::filesystem::path p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::path() : p;
}

absl::StatusOr<std::filesystem::path> ResolveModelDir(const std::string& model_flag,
                                                      const std::filesystem::path& exe_path,
                                                      const std::filesystem::path& cwd) {
  if (!model_flag.empty()) {
    if (!IsDirectory(model_flag)) {
      return absl::NotFoundError(
          absl::StrCat("model directory ", model_flag, " does not exist or is not a directory"));
    }
    return std::filesystem::path(model_flag);
  }
  std::vector<std::filesystem::path> candidates;
  if (!exe_path.empty()) {
    candidates.push_back(
        (exe_path.parent_path() / ".." / ".." / "models" / "demo").lexically_normal());
    // `cmake --install` (and the container image) put it at PREFIX/share/xlstmd/models/demo.
    candidates.push_back((exe_path.parent_path() / ".." / "share" / "xlstmd" / "models" / "demo")
                             .lexically_normal());
  }
  candidates.push_back((cwd / "models" / "demo").lexically_normal());
  for (const std::filesystem::path& c : candidates) {
    if (IsDirectory(c)) return c;
  }
  std::string looked;
  for (const std::filesystem::path& c : candidates) {
    absl::StrAppend(&looked, looked.empty() ? "" : ", ", c.string());
  }
  return absl::FailedPreconditionError(
      absl::StrCat("no --model given and the bundled demo model is missing (looked in ", looked,
                   "); it ships with the repository (restore it with `git checkout models/demo`), "
                   "or pass --model DIR"));
}

absl::StatusOr<LoadedModel> LoadModel(const ServerOptions& options,
                                      const std::filesystem::path& model_dir,
                                      core::EngineObserver* observer) {
  LoadedModel out;
  out.model_dir = model_dir;
  std::filesystem::path abs = std::filesystem::absolute(model_dir).lexically_normal();
  out.model_name =
      abs.has_filename() ? abs.filename().string() : abs.parent_path().filename().string();
  out.random_weights = core::HasRandomWeights(model_dir);

  absl::StatusOr<core::WeightFormat> format =
      core::ResolveWeightFormat(model_dir, options.weight_dtype, options.lm_head_dtype);
  if (!format.ok()) return Annotate(format.status(), absl::StrCat("model ", model_dir.string()));
  kernels::BackendOptions bo;
  bo.threads = static_cast<int>(options.threads);
  bo.weight_dtype = format->float_dtype;
  absl::StatusOr<kernels::MathMode> math = kernels::ParseMathMode(options.cuda_math);
  if (!math.ok()) return Annotate(math.status(), "--cuda-math");
  bo.math = *math;
  absl::StatusOr<std::unique_ptr<kernels::Backend>> backend =
      kernels::CreateBackend(options.backend, bo, &out.backend_why);
  if (!backend.ok()) return Annotate(backend.status(), "backend");
  out.backend = *std::move(backend);
  if (out.backend->Math() != bo.math) {
    spdlog::warn("--cuda-math {} does not apply to backend {} ({}): it computes {}",
                 kernels::MathModeName(bo.math), out.backend->Name(), out.backend_why,
                 kernels::MathModeName(out.backend->Math()));
  }

  core::LoadOptions lo = format->ToLoadOptions(static_cast<int>(options.threads));
  // One log line per finished shard (a 7B checkpoint takes a while, and a stuck shard is then
  // visible), and a progress bar when stderr is a terminal showing text logs.
  base::ProgressBar bar("loading weights", base::ProgressBar::Units::kBytes, stderr,
                        options.log_format == "text");
  const auto load_start = std::chrono::steady_clock::now();
  lo.progress = [&bar, load_start](const core::LoadProgress& p) {
    if (p.file_done) {
      bar.Clear();
      const double s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
      spdlog::info("loaded shard {}/{} {} ({:.1f} MB) at {:.1f} s ({:.0f}% of the weights)",
                   p.files_done, p.files_total,
                   std::filesystem::path(p.file).filename().string(),
                   static_cast<double>(p.file_bytes) / 1e6, s,
                   p.bytes_total == 0 ? 100.0 : 100.0 * static_cast<double>(p.bytes_done) /
                                                    static_cast<double>(p.bytes_total));
    }
    bar.Update(p.bytes_done, p.bytes_total);
  };
  absl::StatusOr<std::unique_ptr<core::XlstmModel>> model =
      core::XlstmModel::Load(model_dir, out.backend.get(), lo);
  bar.Clear();
  if (!model.ok()) return Annotate(model.status(), absl::StrCat("model ", model_dir.string()));

  absl::StatusOr<std::unique_ptr<core::Tokenizer>> tokenizer =
      options.tokenizer_file.empty() ? core::LoadModelTokenizer(model_dir)
                                     : core::LoadTokenizerFile(options.tokenizer_file);
  if (!tokenizer.ok()) {
    return Annotate(tokenizer.status(), absl::StrCat("tokenizer ", options.tokenizer_file.empty()
                                                                       ? model_dir.string()
                                                                       : options.tokenizer_file));
  }
  // Ids the tokenizer can produce must be rows of the embedding; the reverse need not hold
  // (checkpoints pad their vocabulary, and the byte tokenizer covers only the first 257).
  if ((*tokenizer)->vocab_size() > (*model)->vocab_size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "tokenizer has ", (*tokenizer)->vocab_size(), " tokens but model ", model_dir.string(),
        " only ", (*model)->vocab_size(), "; pass the model's own tokenizer"));
  }

  absl::StatusOr<core::ChatTemplate> tmpl = core::ChatTemplate::ForModel(model_dir, **tokenizer);
  if (!tmpl.ok()) return Annotate(tmpl.status(), "chat template");

  core::EngineOptions engine_options = options.ToEngineOptions();
  engine_options.observer = observer;
  XLSTMD_RETURN_IF_ERROR(SizeEngine(**model, *out.backend, &engine_options, &out.sizing_note));
  out.engine_options = engine_options;
  absl::StatusOr<std::unique_ptr<core::Engine>> engine = core::Engine::Create(
      *std::move(model), *std::move(tokenizer), *std::move(tmpl), engine_options);
  if (!engine.ok()) {
    // With a disk tier most engine start failures are about the directory (locked by another
    // daemon, unreadable), so name it.
    return Annotate(engine.status(),
                    options.state_dir.empty()
                        ? std::string("engine")
                        : absl::StrCat("--state-dir ", options.state_dir));
  }
  out.engine = *std::move(engine);
  return out;
}

absl::Status SizeEngine(const core::XlstmModel& model, const kernels::Backend& backend,
                        core::EngineOptions* e, std::string* note) {
  const kernels::DeviceInfo info = backend.Info();
  SizingInput in;
  in.gpu = !backend.HostVisible();
  in.free_bytes = info.free_bytes;
  in.bytes_per_slot = model.state_bytes_per_session();
  in.bytes_per_forward_row = model.ForwardBytes(1, 0);
  in.bytes_per_logit_row = model.ForwardBytes(0, 1);
  EngineSizes sizes{e->resident_slots, e->max_batch, e->prefill_token_budget, e->prefill_piece,
                    ""};
  XLSTMD_RETURN_IF_ERROR(ResolveEngineSizes(in, &sizes));
  e->resident_slots = static_cast<int32_t>(sizes.slots);
  e->max_batch = static_cast<int32_t>(sizes.max_batch);
  e->prefill_token_budget = static_cast<int32_t>(sizes.prefill_budget);
  e->prefill_piece = static_cast<int32_t>(sizes.prefill_piece);
  *note = sizes.note;
  return absl::OkStatus();
}

}  // namespace xlstmd::server
