// Redis plumbing under RedisStore (redis_store.h): parsing a `redis://` / `unix://` URL, a small
// pool of blocking hiredis connections, and command execution that turns every failure into an
// absl::Status. Nothing here knows about snapshots.
//
// Error policy: a connection that failed to connect, timed out, hit EOF or returned bytes that
// are not RESP is UNAVAILABLE (the message names the address, never the password) and is
// discarded, since a timed-out request may still get its reply later and would desynchronize
// the stream. A Redis error reply leaves the connection usable; CallOk() maps it to a status
// (transient server states -> UNAVAILABLE, OOM -> RESOURCE_EXHAUSTED, anything else ->
// INTERNAL). Callers must check the type of every reply they read (the Describe/Expect helpers
// below do that) and never assume a shape.
//
// Threads: RedisPool is thread-safe. A RedisConnection is leased to one thread at a time and
// returns to the pool when destroyed. SIGPIPE from writing to a socket the server closed is
// blocked and swallowed for the calling thread during each call (hiredis writes with write(2),
// which would otherwise kill a process that has not ignored SIGPIPE).
#ifndef XLSTMD_CORE_STATE_REDIS_CONNECTION_H_
#define XLSTMD_CORE_STATE_REDIS_CONNECTION_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"

struct redisContext;  // hiredis; kept out of this header's includes
struct redisReply;

namespace xlstmd::core {

// Where a Redis server is, from `redis://[[user]:password@]host[:port][/db]` (IPv6 hosts in
// brackets, user and password percent-decoded, port 6379 by default) or `unix:///abs/path`.
struct RedisAddress {
  bool is_unix = false;
  std::string host;  // without brackets
  int port = 6379;
  std::string unix_path;
  std::string user;  // empty: AUTH with the password only (the default user)
  std::string password;
  int db = 0;
  // "host:port", "[v6]:port" or "unix:/path"; never includes credentials.
  std::string Display() const;
};
// INVALID_ARGUMENT for anything else (rediss:// TLS, query strings, a bad port or db number).
absl::StatusOr<RedisAddress> ParseRedisUrl(std::string_view url);

struct RedisReplyDeleter {
  void operator()(redisReply* reply) const;
};
using RedisReplyPtr = std::unique_ptr<redisReply, RedisReplyDeleter>;

// Short text for error messages: "integer 5", "nil", "array of 3", "string of 12 bytes", ...
std::string DescribeReply(const redisReply* reply);
// Sets `out` to the reply's bytes (valid while the reply lives) and returns true when it is a
// bulk or status string; returns false for any other type.
bool ReplyString(const redisReply* reply, std::string_view* out);
bool ReplyIsNil(const redisReply* reply);
bool ReplyInteger(const redisReply* reply, long long* out);
// Array elements (an empty span for anything that is not an array).
absl::Span<redisReply* const> ReplyElements(const redisReply* reply);

struct RedisPoolOptions {
  int64_t connect_timeout_ms = 1000;
  // Bounds each socket read and write (SO_RCVTIMEO / SO_SNDTIMEO), so a stalled server fails a
  // call within about this long; a large transfer that keeps making progress is not cut off.
  int64_t io_timeout_ms = 2000;
  int max_connections = 4;
  // How long Acquire waits for a free connection when all are leased.
  int64_t pool_wait_timeout_ms = 5000;
  // After a failed connect, calls that need a new connection fail at once (UNAVAILABLE, with
  // the last error) for this long, so I/O threads do not each sit out a connect timeout
  // against a dead host. 0 retries on every call.
  int64_t reconnect_backoff_ms = 200;
};

struct RedisPoolStats {
  int64_t connects = 0;          // connections opened
  int64_t connect_failures = 0;  // failed attempts (refused, timeout, AUTH/SELECT errors)
  int64_t discarded = 0;         // broken or stale connections closed
  int open = 0;                  // currently open (idle + leased)
};

class RedisPool;

// One leased connection. Move-only; the destructor hands it back to the pool (or closes it if
// a call broke it).
class RedisConnection {
 public:
  RedisConnection(RedisConnection&& other) noexcept;
  RedisConnection& operator=(RedisConnection&&) = delete;
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;
  ~RedisConnection();

  // Sends one command (binary-safe arguments) and waits for its reply. A Redis error reply is
  // returned as a reply (type error); I/O and protocol failures are UNAVAILABLE and break the
  // connection. `args[0]` is the command name, used in messages; no argument is ever logged.
  absl::StatusOr<RedisReplyPtr> Call(absl::Span<const std::string_view> args);
  // Same, but an error reply becomes a status (see the header comment for the mapping).
  absl::StatusOr<RedisReplyPtr> CallOk(absl::Span<const std::string_view> args);

  // The status for an error reply to `command` (for callers of Call that inspect the error).
  absl::Status ErrorReplyStatus(std::string_view command, const redisReply* reply) const;
  // Callers that read a reply they cannot make sense of mid-protocol mark the connection
  // broken so it is not reused.
  void MarkBroken() { broken_ = true; }
  const std::string& address() const;

 private:
  friend class RedisPool;
  RedisConnection(RedisPool* pool, redisContext* ctx) : pool_(pool), ctx_(ctx) {}
  RedisPool* pool_;
  redisContext* ctx_;
  bool broken_ = false;
};

class RedisPool {
 public:
  // Does not connect: connections are opened on demand by Acquire.
  RedisPool(RedisAddress address, RedisPoolOptions options);
  ~RedisPool();  // every RedisConnection must have been destroyed
  RedisPool(const RedisPool&) = delete;
  RedisPool& operator=(const RedisPool&) = delete;

  // An idle connection that still looks alive, or a new one (connect, timeouts, AUTH, SELECT).
  // UNAVAILABLE naming the address when Redis cannot be reached, or when all
  // max_connections stay leased for pool_wait_timeout_ms.
  absl::StatusOr<RedisConnection> Acquire();

  RedisPoolStats Stats() const;
  const std::string& address() const { return display_; }
  const RedisPoolOptions& options() const { return options_; }

 private:
  friend class RedisConnection;
  bool CanAcquire() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<redisContext*> Open();
  void Release(redisContext* ctx, bool reusable);

  const RedisAddress address_;
  const RedisPoolOptions options_;
  const std::string display_;

  mutable absl::Mutex mu_;
  std::vector<redisContext*> idle_ ABSL_GUARDED_BY(mu_);
  int open_ ABSL_GUARDED_BY(mu_) = 0;                  // idle + leased + being opened
  int64_t backoff_until_ms_ ABSL_GUARDED_BY(mu_) = 0;  // steady clock
  std::string last_connect_error_ ABSL_GUARDED_BY(mu_);
  RedisPoolStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_STATE_REDIS_CONNECTION_H_
