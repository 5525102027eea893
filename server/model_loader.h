// Loading what the daemon serves: the backend, the model, its tokenizer and chat template,
// assembled into a running core::Engine. Called once at startup, from main's thread, while
// the gRPC server already listens (and answers UNAVAILABLE "model loading").
#ifndef XLSTMD_SERVER_MODEL_LOADER_H_
#define XLSTMD_SERVER_MODEL_LOADER_H_

#include <filesystem>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/engine/engine.h"
#include "kernels/backend.h"
#include "server/options.h"

namespace xlstmd::server {

// The loaded model. The engine holds the model, which uses the backend, so the engine is
// declared last and destroyed first.
struct LoadedModel {
  std::unique_ptr<kernels::Backend> backend;
  std::unique_ptr<core::Engine> engine;
  std::filesystem::path model_dir;  // as resolved (see ResolveModelDir)
  std::string model_name;           // the directory's name, for ModelInfo.model
  bool random_weights = false;      // config.json says so (xlstm mkmodel): ModelInfo, log
  std::string backend_why;          // one token: why this backend (CreateBackend)
  core::EngineOptions engine_options;  // as resolved for the backend (engine_sizing.h)
  std::string sizing_note;          // how --slots auto was sized ("" when given)
};

// Fills the engine sizes left at 0 (--slots auto, batch and prefill by backend) from the
// loaded model and its backend (engine_sizing.h).
absl::Status SizeEngine(const core::XlstmModel& model, const kernels::Backend& backend,
                        core::EngineOptions* e, std::string* note);

// The model directory to serve: --model when given (it must exist), else the bundled demo
// model committed in the repository: `<exe_dir>/../../models/demo` (the binary lives in
// build/bin), then an installed copy `<exe_dir>/../share/xlstmd/models/demo` (cmake --install,
// the container image), then `<cwd>/models/demo`. FAILED_PRECONDITION with advice when none exists.
absl::StatusOr<std::filesystem::path> ResolveModelDir(const std::string& model_flag,
                                                      const std::filesystem::path& exe_path,
                                                      const std::filesystem::path& cwd);

// The running binary's path (/proc/self/exe), or "" when unknown.
std::filesystem::path SelfExePath();

// Builds the backend, loads the model, tokenizer (--tokenizer, else the model's) and chat
// template, and starts the engine with the options' limits. `observer` (may be null) gets
// the engine's metrics hooks and must outlive the engine (Server::engine_observer()).
absl::StatusOr<LoadedModel> LoadModel(const ServerOptions& options,
                                      const std::filesystem::path& model_dir,
                                      core::EngineObserver* observer = nullptr);

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_MODEL_LOADER_H_
