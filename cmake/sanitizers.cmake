# Sanitizer and fuzzing builds (scripts/sanitize.sh drives them; CI runs them after the
# Release suite). They are separate build trees, never the Release tree users run.
#   XLSTMD_SANITIZE=address  ASan + UBSan, every test (UBSan reports are fatal, not warnings)
#   XLSTMD_SANITIZE=thread   TSan (build only the engine, state and server tests there)
#   XLSTMD_FUZZ=ON           libFuzzer targets in fuzz/ (clang only); pairs with address
set(XLSTMD_SANITIZE "" CACHE STRING "Sanitizer build: address|thread|empty")
option(XLSTMD_FUZZ "Build the libFuzzer targets (clang)" OFF)

if(XLSTMD_SANITIZE STREQUAL "address")
  set(_san -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
  # UBSan's vptr check needs RTTI of types from Debian's libraries built without it.
  list(APPEND _san -fno-sanitize=vptr)
elseif(XLSTMD_SANITIZE STREQUAL "thread")
  set(_san -fsanitize=thread -fno-omit-frame-pointer)
elseif(NOT XLSTMD_SANITIZE STREQUAL "")
  message(FATAL_ERROR "XLSTMD_SANITIZE must be address, thread or empty, not '${XLSTMD_SANITIZE}'")
endif()

if(XLSTMD_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "XLSTMD_FUZZ needs clang (libFuzzer); configure with CXX=clang++")
  endif()
  # Coverage feedback for the libraries the targets exercise; the targets link -fsanitize=fuzzer.
  list(APPEND _san -fsanitize=fuzzer-no-link)
endif()

if(_san)
  add_compile_options(${_san})
  add_link_options(${_san})
  # Sanitized trees never use the CUDA toolkit: its runtime is not instrumented.
  set(XLSTMD_ENABLE_CUDA OFF CACHE STRING "" FORCE)
endif()

# TSan: make Debian's (uninstrumented) abseil synchronisation visible to TSan
# (tests/sanitizers/tsan_absl_shim.cc says how). Every executable links the shim; it needs the
# mangled form of abseil's inline namespace, read from the installed options.h. The test
# binaries link it (tests/CMakeLists.txt); the TSan run covers only those.
if(XLSTMD_SANITIZE STREQUAL "thread")
  find_file(_absl_options absl/base/options.h REQUIRED)
  file(STRINGS ${_absl_options} _ns_line REGEX "^#define ABSL_OPTION_INLINE_NAMESPACE_NAME ")
  string(REGEX REPLACE "^#define ABSL_OPTION_INLINE_NAMESPACE_NAME ([A-Za-z0-9_]+).*" "\\1"
         _absl_ns "${_ns_line}")
  string(LENGTH "${_absl_ns}" _absl_ns_len)
  add_library(xlstmd_tsan_shim OBJECT ${PROJECT_SOURCE_DIR}/tests/sanitizers/tsan_absl_shim.cc)
  target_compile_definitions(xlstmd_tsan_shim PRIVATE
    XLSTMD_ABSL_MANGLED_NS="4absl${_absl_ns_len}${_absl_ns}")
  target_link_libraries(xlstmd_tsan_shim PUBLIC absl::synchronization ${CMAKE_DL_LIBS})
endif()
