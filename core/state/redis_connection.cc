#include "core/state/redis_connection.h"

#include <hiredis/hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/base/check.h"

namespace xlstmd::core {
namespace {

constexpr size_t kMaxErrorTextChars = 256;  // of a server's error reply, in our messages

// Debian's Abseil has its own string_view type, distinct from std::string_view.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

int64_t SteadyNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

timeval ToTimeval(int64_t ms) {
  timeval tv;
  tv.tv_sec = static_cast<time_t>(ms / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms % 1000) * 1000);
  return tv;
}

// Blocks SIGPIPE for this thread while hiredis writes, and discards a SIGPIPE that the write
// raised (a write to a socket the server closed raises it on the writing thread). This is how
// libpq copes with the same problem without changing the process's signal dispositions, which
// a library has no business doing.
class ScopedSigpipeBlock {
 public:
  ScopedSigpipeBlock() {
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &block, &old_mask_);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
  }
  ~ScopedSigpipeBlock() {
    if (!was_pending_) {
      sigset_t pending;
      sigpending(&pending);
      if (sigismember(&pending, SIGPIPE) == 1) {
        sigset_t only;
        sigemptyset(&only);
        sigaddset(&only, SIGPIPE);
        const timespec zero = {0, 0};
        while (sigtimedwait(&only, nullptr, &zero) < 0 && errno == EINTR) {
        }
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
  }
  ScopedSigpipeBlock(const ScopedSigpipeBlock&) = delete;
  ScopedSigpipeBlock& operator=(const ScopedSigpipeBlock&) = delete;

 private:
  sigset_t old_mask_;
  bool was_pending_ = false;
};

std::string UpperCommand(std::string_view name) {
  std::string out(name.substr(0, 32));
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

// The status for a context whose `err` is set (connect failure, I/O error, EOF, bad protocol).
// `timeout_hint` (e.g. "io_timeout_ms=2000") is appended when the error is a timeout.
absl::Status ContextError(const std::string& address, std::string_view what,
                          const redisContext* ctx, std::string_view timeout_hint) {
  if (ctx == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("redis ", address, ": ", Av(what), ": cannot allocate a connection"));
  }
  std::string detail = ctx->errstr[0] != '\0' ? std::string(ctx->errstr) : "unknown error";
  // hiredis reports an expired SO_RCVTIMEO as EAGAIN's text; say what it means.
  if (ctx->err == REDIS_ERR_IO && (absl::StrContains(detail, "temporarily unavailable") ||
                                   absl::StrContains(detail, "timed out"))) {
    absl::StrAppend(&detail, " (no progress within ", Av(timeout_hint), ")");
  }
  return absl::UnavailableError(absl::StrCat("redis ", address, ": ", Av(what), ": ", detail));
}

std::string IoHint(int64_t io_timeout_ms) { return absl::StrCat("io_timeout_ms=", io_timeout_ms); }

absl::StatusOr<RedisReplyPtr> RawCall(redisContext* ctx, const std::string& address,
                                      int64_t io_timeout_ms,
                                      absl::Span<const std::string_view> args) {
  XLSTMD_CHECK(!args.empty());
  std::vector<const char*> argv(args.size());
  std::vector<size_t> lens(args.size());
  for (size_t i = 0; i < args.size(); ++i) {
    argv[i] = args[i].data();
    lens[i] = args[i].size();
  }
  void* raw = nullptr;
  {
    ScopedSigpipeBlock no_sigpipe;
    raw = redisCommandArgv(ctx, static_cast<int>(args.size()), argv.data(), lens.data());
  }
  if (raw == nullptr) {
    return ContextError(address, UpperCommand(args[0]), ctx, IoHint(io_timeout_ms));
  }
  return RedisReplyPtr(static_cast<redisReply*>(raw));
}

absl::Status ErrorReplyToStatus(const std::string& address, std::string_view command,
                                const redisReply* reply) {
  std::string_view text(reply->str != nullptr ? reply->str : "", reply->str ? reply->len : 0);
  text = text.substr(0, kMaxErrorTextChars);
  const std::string message =
      absl::StrCat("redis ", address, ": ", UpperCommand(command), ": ", Av(text));
  // Redis prefixes each error with a code word. These are states a server leaves on its own
  // (loading a dataset, running a slow script, failing over), so a retry may succeed.
  for (std::string_view transient :
       {"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "READONLY", "NOREPLICAS"}) {
    if (absl::StartsWith(Av(text), Av(transient))) return absl::UnavailableError(message);
  }
  if (absl::StartsWith(Av(text), "OOM")) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

bool ParseUint(std::string_view s, uint64_t max, uint64_t* out) {
  if (s.empty()) return false;
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v > max) return false;
  *out = v;
  return true;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool PercentDecode(std::string_view in, std::string* out) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out->push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) return false;  // '%' needs two hex digits after it
    const int hi = HexValue(in[i + 1]);
    const int lo = HexValue(in[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return true;
}

}  // namespace

std::string RedisAddress::Display() const {
  if (is_unix) return absl::StrCat("unix:", unix_path);
  if (absl::StrContains(host, ":")) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

absl::StatusOr<RedisAddress> ParseRedisUrl(std::string_view url) {
  // Never echo the URL: it may carry a password.
  auto bad = [](std::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("redis url: ", Av(why),
                     " (expected redis://[[user]:password@]host[:port][/db] or unix:///path)"));
  };
  RedisAddress a;
  if (absl::StartsWith(Av(url), "unix://")) {
    a.is_unix = true;
    a.unix_path = std::string(url.substr(7));
    if (a.unix_path.empty() || a.unix_path[0] != '/')
      return bad("unix socket path must be absolute");
    if (absl::StrContains(a.unix_path, "?")) return bad("query parameters are not supported");
    return a;
  }
  if (absl::StartsWith(Av(url), "rediss://")) return bad("TLS (rediss://) is not supported");
  if (!absl::StartsWith(Av(url), "redis://")) return bad("unknown scheme");
  std::string_view rest = url.substr(8);
  if (rest.find_first_of("?#") != std::string_view::npos) {
    return bad("query parameters are not supported");
  }
  // The authority ends at the first '/' after the last '@' (a password may contain '/').
  const size_t at = rest.rfind('@');
  std::string_view userinfo;
  if (at != std::string_view::npos) {
    userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
  }
  std::string_view hostport = rest;
  std::string_view db;
  if (const size_t slash = rest.find('/'); slash != std::string_view::npos) {
    hostport = rest.substr(0, slash);
    db = rest.substr(slash + 1);
  }
  if (at != std::string_view::npos) {
    const size_t colon = userinfo.find(':');
    if (colon == std::string_view::npos)
      return bad("credentials need a ':' (redis://:password@host)");
    if (!PercentDecode(userinfo.substr(0, colon), &a.user) ||
        !PercentDecode(userinfo.substr(colon + 1), &a.password)) {
      return bad("bad percent-encoding in the credentials");
    }
    if (a.password.empty()) return bad("empty password");
  }
  std::string_view port;
  if (!hostport.empty() && hostport[0] == '[') {
    const size_t close = hostport.find(']');
    if (close == std::string_view::npos) return bad("unterminated [IPv6] host");
    a.host = std::string(hostport.substr(1, close - 1));
    std::string_view after = hostport.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return bad("junk after the [IPv6] host");
      port = after.substr(1);
      if (port.empty()) return bad("empty port");
    }
  } else {
    const size_t colon = hostport.find(':');
    a.host = std::string(hostport.substr(0, colon));
    if (colon != std::string_view::npos) {
      port = hostport.substr(colon + 1);
      if (port.empty()) return bad("empty port");
    }
  }
  if (a.host.empty()) return bad("missing host");
  if (!port.empty()) {
    uint64_t p = 0;
    if (!ParseUint(port, 65535, &p) || p == 0) return bad("port must be 1..65535");
    a.port = static_cast<int>(p);
  }
  if (!db.empty()) {
    uint64_t d = 0;
    if (!ParseUint(db, 1u << 20, &d)) return bad("database must be a small non-negative number");
    a.db = static_cast<int>(d);
  }
  return a;
}

void RedisReplyDeleter::operator()(redisReply* reply) const { freeReplyObject(reply); }

std::string DescribeReply(const redisReply* reply) {
  if (reply == nullptr) return "no reply";
  switch (reply->type) {
    case REDIS_REPLY_STRING:
      return absl::StrCat("string of ", reply->len, " bytes");
    case REDIS_REPLY_ARRAY:
      return absl::StrCat("array of ", reply->elements);
    case REDIS_REPLY_INTEGER:
      return absl::StrCat("integer ", reply->integer);
    case REDIS_REPLY_NIL:
      return "nil";
    case REDIS_REPLY_STATUS:
      return absl::StrCat("status '",
                          Av(std::string_view(reply->str != nullptr ? reply->str : "",
                                              reply->str != nullptr ? reply->len : 0)
                                 .substr(0, 64)),
                          "'");
    case REDIS_REPLY_ERROR:
      return "error reply";
    default:
      return absl::StrCat("reply of unknown type ", reply->type);
  }
}

bool ReplyString(const redisReply* reply, std::string_view* out) {
  if (reply == nullptr) return false;
  if (reply->type != REDIS_REPLY_STRING && reply->type != REDIS_REPLY_STATUS) return false;
  *out = reply->str != nullptr ? std::string_view(reply->str, reply->len) : std::string_view();
  return true;
}

bool ReplyIsNil(const redisReply* reply) {
  return reply != nullptr && reply->type == REDIS_REPLY_NIL;
}

bool ReplyInteger(const redisReply* reply, long long* out) {
  if (reply == nullptr || reply->type != REDIS_REPLY_INTEGER) return false;
  *out = reply->integer;
  return true;
}

absl::Span<redisReply* const> ReplyElements(const redisReply* reply) {
  if (reply == nullptr || reply->type != REDIS_REPLY_ARRAY || reply->element == nullptr) {
    return {};
  }
  return absl::Span<redisReply* const>(reply->element, reply->elements);
}

// ---------------------------------------------------------------------------------------------
// RedisConnection

RedisConnection::RedisConnection(RedisConnection&& other) noexcept
    : pool_(other.pool_), ctx_(std::exchange(other.ctx_, nullptr)), broken_(other.broken_) {}

RedisConnection::~RedisConnection() {
  if (ctx_ != nullptr) pool_->Release(ctx_, !broken_);
}

const std::string& RedisConnection::address() const { return pool_->address(); }

absl::StatusOr<RedisReplyPtr> RedisConnection::Call(absl::Span<const std::string_view> args) {
  absl::StatusOr<RedisReplyPtr> reply =
      RawCall(ctx_, pool_->address(), pool_->options().io_timeout_ms, args);
  if (!reply.ok()) broken_ = true;
  return reply;
}

absl::StatusOr<RedisReplyPtr> RedisConnection::CallOk(absl::Span<const std::string_view> args) {
  absl::StatusOr<RedisReplyPtr> reply = Call(args);
  if (reply.ok() && (*reply)->type == REDIS_REPLY_ERROR) {
    return ErrorReplyToStatus(pool_->address(), args[0], reply->get());
  }
  return reply;
}

absl::Status RedisConnection::ErrorReplyStatus(std::string_view command,
                                               const redisReply* reply) const {
  return ErrorReplyToStatus(pool_->address(), command, reply);
}

// ---------------------------------------------------------------------------------------------
// RedisPool

RedisPool::RedisPool(RedisAddress address, RedisPoolOptions options)
    : address_(std::move(address)), options_(options), display_(address_.Display()) {}

RedisPool::~RedisPool() {
  absl::MutexLock lock(&mu_);
  XLSTMD_CHECK(open_ == static_cast<int>(idle_.size()));  // no connection still leased
  for (redisContext* ctx : idle_) redisFree(ctx);
  idle_.clear();
}

bool RedisPool::CanAcquire() const { return !idle_.empty() || open_ < options_.max_connections; }

absl::StatusOr<RedisConnection> RedisPool::Acquire() {
  {
    absl::MutexLock lock(&mu_);
    if (!mu_.AwaitWithTimeout(absl::Condition(this, &RedisPool::CanAcquire),
                              absl::Milliseconds(options_.pool_wait_timeout_ms))) {
      return absl::UnavailableError(
          absl::StrCat("redis ", display_, ": all ", options_.max_connections,
                       " connections stayed busy for ", options_.pool_wait_timeout_ms, " ms"));
    }
    while (!idle_.empty()) {
      redisContext* ctx = idle_.back();
      idle_.pop_back();
      // An idle connection has nothing to read. If poll says otherwise, the server closed it
      // (restart, timeout, CLIENT KILL) or sent junk: drop it instead of failing the call.
      pollfd p = {ctx->fd, POLLIN | POLLRDHUP, 0};
      if (ctx->err == 0 && ::poll(&p, 1, 0) == 0) return RedisConnection(this, ctx);
      redisFree(ctx);
      --open_;
      ++stats_.discarded;
    }
    const int64_t now = SteadyNowMs();
    if (now < backoff_until_ms_) {
      return absl::UnavailableError(absl::StrCat(last_connect_error_, " (not retrying for ",
                                                 backoff_until_ms_ - now, " ms)"));
    }
    ++open_;  // reserves the slot while connecting outside the lock
  }
  absl::StatusOr<redisContext*> ctx = Open();
  absl::MutexLock lock(&mu_);
  if (!ctx.ok()) {
    --open_;
    ++stats_.connect_failures;
    last_connect_error_ = std::string(ctx.status().message());
    backoff_until_ms_ = SteadyNowMs() + options_.reconnect_backoff_ms;
    return ctx.status();
  }
  ++stats_.connects;
  backoff_until_ms_ = 0;
  return RedisConnection(this, *ctx);
}

absl::StatusOr<redisContext*> RedisPool::Open() {
  const timeval connect_tv = ToTimeval(options_.connect_timeout_ms);
  redisContext* ctx =
      address_.is_unix ? redisConnectUnixWithTimeout(address_.unix_path.c_str(), connect_tv)
                       : redisConnectWithTimeout(address_.host.c_str(), address_.port, connect_tv);
  if (ctx == nullptr || ctx->err != 0) {
    absl::Status s = ContextError(display_, "connect", ctx,
                                  absl::StrCat("connect_timeout_ms=", options_.connect_timeout_ms));
    if (ctx != nullptr) redisFree(ctx);
    return s;
  }
  absl::Status status;
  if (redisSetTimeout(ctx, ToTimeval(options_.io_timeout_ms)) != REDIS_OK) {
    status = ContextError(display_, "setting socket timeouts", ctx, "");
  }
  // Keepalive notices a peer that vanished without a FIN (a dead host) on idle connections.
  if (status.ok() && !address_.is_unix && redisEnableKeepAlive(ctx) != REDIS_OK) {
    status = ContextError(display_, "enabling keepalive", ctx, "");
  }
  auto setup = [&](absl::Span<const std::string_view> args) -> absl::Status {
    absl::StatusOr<RedisReplyPtr> r = RawCall(ctx, display_, options_.io_timeout_ms, args);
    if (!r.ok()) return r.status();
    std::string_view text;
    if ((*r)->type == REDIS_REPLY_ERROR) {
      // A refused AUTH or SELECT makes the tier unusable, like a refused connection.
      return absl::UnavailableError(ErrorReplyToStatus(display_, args[0], r->get()).message());
    }
    if (!ReplyString(r->get(), &text) || text != "OK") {
      return absl::UnavailableError(absl::StrCat("redis ", display_, ": ", Av(args[0]),
                                                 ": unexpected ", DescribeReply(r->get())));
    }
    return absl::OkStatus();
  };
  if (status.ok() && !address_.password.empty()) {
    status = address_.user.empty() ? setup({"AUTH", address_.password})
                                   : setup({"AUTH", address_.user, address_.password});
  }
  if (status.ok() && address_.db != 0) {
    const std::string db = std::to_string(address_.db);
    status = setup({"SELECT", db});
  }
  if (!status.ok()) {
    redisFree(ctx);
    return status;
  }
  return ctx;
}

void RedisPool::Release(redisContext* ctx, bool reusable) {
  absl::MutexLock lock(&mu_);
  if (reusable && ctx->err == 0) {
    idle_.push_back(ctx);
    return;
  }
  redisFree(ctx);
  --open_;
  ++stats_.discarded;
}

RedisPoolStats RedisPool::Stats() const {
  absl::MutexLock lock(&mu_);
  RedisPoolStats s = stats_;
  s.open = open_;
  return s;
}

}  // namespace xlstmd::core
