// ThreadSanitizer builds only (cmake/sanitizers.cmake links this into every executable).
//
// Debian's abseil is not built with -fsanitize=thread, so TSan cannot see absl::Mutex,
// CondVar or Notification synchronise anything: their atomics and futex calls run inside an
// uninstrumented library. Every access guarded by an absl::Mutex would then be reported as a
// race. These definitions interpose the out-of-line entry points (the executable's symbols
// win over the shared library's, for calls from libgrpc too) and tell TSan what each one
// means, as abseil's own annotations would in an instrumented build:
//   acquiring (Lock, TryLock success, the end of a wait)  -> __tsan_acquire(object)
//   releasing (Unlock, Notify, the start of a wait)       -> __tsan_release(object)
// Each forwards to the library's definition, found with dlsym(RTLD_NEXT). Reader locks are
// treated like writer locks: that can hide a read/read "race" (which is none), never invent one.
#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

#ifndef XLSTMD_ABSL_MANGLED_NS
#error "cmake/sanitizers.cmake defines XLSTMD_ABSL_MANGLED_NS (e.g. 4absl7debian3)"
#endif

namespace {

template <typename Fn>
Fn Real(const char* mangled) {
  void* sym = dlsym(RTLD_NEXT, mangled);
  if (sym == nullptr) {
    std::fprintf(stderr, "tsan_absl_shim: %s not found in the loaded libraries\n", mangled);
    std::abort();
  }
  return reinterpret_cast<Fn>(sym);
}

#define XLSTMD_REAL(type, name) \
  static const auto real = Real<type>("_ZN" XLSTMD_ABSL_MANGLED_NS name)
// const member functions mangle as _ZNK...
#define XLSTMD_REAL_CONST(type, name) \
  static const auto real = Real<type>("_ZNK" XLSTMD_ABSL_MANGLED_NS name)

void Acquire(const void* p) { __tsan_acquire(const_cast<void*>(p)); }
void Release(const void* p) { __tsan_release(const_cast<void*>(p)); }

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  XLSTMD_REAL(void (*)(Mutex*), "5Mutex4LockEv");
  real(this);
  Acquire(this);
}
void Mutex::Unlock() {
  XLSTMD_REAL(void (*)(Mutex*), "5Mutex6UnlockEv");
  Release(this);
  real(this);
}
bool Mutex::TryLock() {
  XLSTMD_REAL(bool (*)(Mutex*), "5Mutex7TryLockEv");
  const bool locked = real(this);
  if (locked) Acquire(this);
  return locked;
}
void Mutex::ReaderLock() {
  XLSTMD_REAL(void (*)(Mutex*), "5Mutex10ReaderLockEv");
  real(this);
  Acquire(this);
}
void Mutex::ReaderUnlock() {
  XLSTMD_REAL(void (*)(Mutex*), "5Mutex12ReaderUnlockEv");
  Release(this);
  real(this);
}
bool Mutex::ReaderTryLock() {
  XLSTMD_REAL(bool (*)(Mutex*), "5Mutex13ReaderTryLockEv");
  const bool locked = real(this);
  if (locked) Acquire(this);
  return locked;
}
void Mutex::LockWhen(const Condition& cond) {
  XLSTMD_REAL(void (*)(Mutex*, const Condition&), "5Mutex8LockWhenERKNS0_9ConditionE");
  real(this, cond);
  Acquire(this);
}
void Mutex::Await(const Condition& cond) {
  XLSTMD_REAL(void (*)(Mutex*, const Condition&), "5Mutex5AwaitERKNS0_9ConditionE");
  Release(this);
  real(this, cond);
  Acquire(this);
}
bool Mutex::AwaitWithTimeout(const Condition& cond, absl::Duration timeout) {
  XLSTMD_REAL(bool (*)(Mutex*, const Condition&, absl::Duration),
              "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  Release(this);
  const bool met = real(this, cond, timeout);
  Acquire(this);
  return met;
}
bool Mutex::AwaitWithDeadline(const Condition& cond, absl::Time deadline) {
  XLSTMD_REAL(bool (*)(Mutex*, const Condition&, absl::Time),
              "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  Release(this);
  const bool met = real(this, cond, deadline);
  Acquire(this);
  return met;
}

void CondVar::Wait(Mutex* mu) {
  XLSTMD_REAL(void (*)(CondVar*, Mutex*), "7CondVar4WaitEPNS0_5MutexE");
  Release(mu);
  real(this, mu);
  Acquire(mu);
}
bool CondVar::WaitWithTimeout(Mutex* mu, absl::Duration timeout) {
  XLSTMD_REAL(bool (*)(CondVar*, Mutex*, absl::Duration),
              "7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  Release(mu);
  const bool timed_out = real(this, mu, timeout);
  Acquire(mu);
  return timed_out;
}
bool CondVar::WaitWithDeadline(Mutex* mu, absl::Time deadline) {
  XLSTMD_REAL(bool (*)(CondVar*, Mutex*, absl::Time),
              "7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  Release(mu);
  const bool timed_out = real(this, mu, deadline);
  Acquire(mu);
  return timed_out;
}

void Notification::Notify() {
  XLSTMD_REAL(void (*)(Notification*), "12Notification6NotifyEv");
  Release(this);
  real(this);
}
void Notification::WaitForNotification() const {
  XLSTMD_REAL_CONST(void (*)(const Notification*), "12Notification19WaitForNotificationEv");
  real(this);
  Acquire(this);
}
bool Notification::WaitForNotificationWithTimeout(absl::Duration timeout) const {
  XLSTMD_REAL_CONST(bool (*)(const Notification*, absl::Duration),
              "12Notification30WaitForNotificationWithTimeoutENS0_8DurationE");
  const bool notified = real(this, timeout);
  if (notified) Acquire(this);
  return notified;
}
bool Notification::WaitForNotificationWithDeadline(absl::Time deadline) const {
  XLSTMD_REAL_CONST(bool (*)(const Notification*, absl::Time),
              "12Notification31WaitForNotificationWithDeadlineENS0_4TimeE");
  const bool notified = real(this, deadline);
  if (notified) Acquire(this);
  return notified;
}

ABSL_NAMESPACE_END
}  // namespace absl
