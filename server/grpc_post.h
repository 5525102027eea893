// RunOnGrpcThread: hands a function to one of gRPC's callback threads. Engine completions
// (a created session, a finished delete) arrive on the engine's scheduler thread or its I/O
// pool; converting the result to protobuf and finishing the RPC belongs on gRPC's threads, so
// the scheduler only posts (the same mechanism as ChatReactor's stream wakeup).
#ifndef XLSTMD_SERVER_GRPC_POST_H_
#define XLSTMD_SERVER_GRPC_POST_H_

#include <functional>

namespace xlstmd::server {

// `fn` runs exactly once, on a gRPC executor thread, soon after this returns.
void RunOnGrpcThread(std::function<void()> fn);

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_GRPC_POST_H_
