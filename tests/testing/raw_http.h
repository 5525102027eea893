// A raw TCP client for the HTTP listener tests: it sends exactly the bytes it is given (so
// malformed, slow and pipelined requests can be sent) and reads what comes back.
#ifndef XLSTMD_TESTS_TESTING_RAW_HTTP_H_
#define XLSTMD_TESTS_TESTING_RAW_HTTP_H_

#include <chrono>
#include <string>

namespace xlstmd::testing {

class RawConnection {
 public:
  // Connects to 127.0.0.1:port; connected() says whether it worked.
  explicit RawConnection(int port);
  ~RawConnection();
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  bool connected() const { return fd_ >= 0; }
  bool Send(const std::string& bytes);
  // Reads until `marker` has arrived (returns everything read so far), the peer closes, or
  // `timeout_ms` passes.
  std::string ReadUntil(const std::string& marker, int timeout_ms = 5000);
  // Reads until the peer closes or `timeout_ms` passes; `closed` (may be null) says which.
  std::string ReadToClose(int timeout_ms = 5000, bool* closed = nullptr);
  void Close();

 private:
  bool ReadMore(std::string* out, std::chrono::steady_clock::time_point end, bool* closed);

  int fd_ = -1;
  std::string pending_;  // read past a marker, handed out first next time
};

}  // namespace xlstmd::testing

#endif  // XLSTMD_TESTS_TESTING_RAW_HTTP_H_
