# CUDA is optional and auto-detected: the build must work with and without the toolkit.
# XLSTMD_HAVE_CUDA is the one switch the backend registry looks at.
set(XLSTMD_HAVE_CUDA OFF)
if(NOT XLSTMD_ENABLE_CUDA STREQUAL "OFF")
  if(NOT DEFINED CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      # Ampere and Hopper SASS plus compute_90 PTX so newer GPUs can JIT; `native` fails
      # without a GPU. Override with -DCMAKE_CUDA_ARCHITECTURES=... (e.g. 90a-real).
      set(CMAKE_CUDA_ARCHITECTURES 80-real 90-real 90-virtual)
    endif()
    set(CMAKE_CUDA_HOST_COMPILER ${CMAKE_CXX_COMPILER})
    enable_language(CUDA)
    # CUDA sources follow CXX_STANDARD (20), but CMake 3.25 knows no C++20 flag for nvcc 13
    # (which supports it): tell it.
    if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
      set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
      set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    endif()
    find_package(CUDAToolkit REQUIRED)
    set(XLSTMD_HAVE_CUDA ON)
  elseif(XLSTMD_ENABLE_CUDA STREQUAL "ON")
    message(FATAL_ERROR "XLSTMD_ENABLE_CUDA=ON but no nvcc was found")
  endif()
endif()
message(STATUS "xlstmd CUDA backend: ${XLSTMD_HAVE_CUDA}")
