# xlstmd container image (docs/deploy.md). Two variants from one file:
#   podman build --format docker --build-arg VARIANT=cpu  -t xlstmd:0.1.0 .
#   docker build --build-arg VARIANT=cuda -t xlstmd:0.1.0-cuda .
# The CPU variant's kernels pick their ISA at run time (AVX2, AVX-512, AMX), so one image
# serves every x86-64 node; the CUDA variant adds the CUDA 13 runtime and cuBLAS from NVIDIA's
# Debian 12 repository (the driver comes from the node). Runs as uid 10001 with a read-only
# root: it writes only /tmp and the state dir /var/lib/xlstmd/state.

# A dated Debian 12 tag (or a digest), never `latest`: rebuilding gives the same base.
ARG BASE_IMAGE=docker.io/library/debian:bookworm-20241111-slim
ARG VARIANT=cpu

FROM ${BASE_IMAGE} AS build
ARG VARIANT
RUN case "${VARIANT}" in cpu|cuda) ;; \
      *) echo "VARIANT must be cpu or cuda, not '${VARIANT}'" >&2; exit 1 ;; esac
# The same package list CI builds with (scripts/bootstrap.sh --deps build).
COPY scripts/bootstrap.sh scripts/apt-install.sh /src/scripts/
RUN /src/scripts/bootstrap.sh --deps build
# NVIDIA's repository for the CUDA variant: nvcc and cuBLAS to build, their runtime libraries
# to ship. The keyring package is kept for the runtime stage.
ARG CUDA_KEYRING_URL=https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb
RUN if [ "${VARIANT}" = cuda ]; then \
      apt-get install -y -qq --no-install-recommends ca-certificates curl && \
      curl -fsSL -o /opt/cuda-keyring.deb "${CUDA_KEYRING_URL}" && \
      dpkg -i /opt/cuda-keyring.deb && apt-get update -qq && \
      apt-get install -y -qq --no-install-recommends cuda-nvcc-13-0 cuda-cudart-dev-13-0 \
        libcublas-dev-13-0; \
    else touch /opt/cuda-keyring.deb; fi
COPY . /src
WORKDIR /src
# Release, no -march=native; tests and benchmarks are not built. GIT_COMMIT names the commit
# in `xlstmd --version` (the build context has no .git).
ARG GIT_COMMIT=""
RUN if [ "${VARIANT}" = cuda ]; then \
      cuda="-DXLSTMD_ENABLE_CUDA=ON -DCMAKE_CUDA_COMPILER=/usr/local/cuda-13.0/bin/nvcc"; \
    else cuda="-DXLSTMD_ENABLE_CUDA=OFF"; fi && \
    XLSTMD_GIT_COMMIT="${GIT_COMMIT}" cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DBUILD_TESTING=OFF ${cuda} && \
    XLSTMD_GIT_COMMIT="${GIT_COMMIT}" cmake --build /build --target xlstmd xlstm && \
    cmake --install /build --prefix /opt/xlstmd --strip && \
    scripts/runtime-packages.sh /opt/xlstmd/bin/xlstmd /opt/xlstmd/bin/xlstm \
      > /opt/xlstmd/runtime-packages.txt && \
    sed 's/^/runtime package: /' /opt/xlstmd/runtime-packages.txt

FROM ${BASE_IMAGE} AS runtime
ARG VARIANT
COPY --from=build /opt/xlstmd/runtime-packages.txt /opt/cuda-keyring.deb /tmp/
# Exactly the packages owning the binaries' shared libraries, then no apt lists.
RUN if [ "${VARIANT}" = cuda ]; then dpkg -i /tmp/cuda-keyring.deb; fi && \
    apt-get update -qq && \
    DEBIAN_FRONTEND=noninteractive xargs -a /tmp/runtime-packages.txt \
      apt-get install -y -qq --no-install-recommends && \
    apt-get clean && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt /tmp/cuda-keyring.deb
RUN groupadd --gid 10001 xlstmd && \
    useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin xlstmd && \
    mkdir -p /var/lib/xlstmd/state && chown 10001:10001 /var/lib/xlstmd/state
COPY --from=build /opt/xlstmd/bin/ /usr/local/bin/
COPY --from=build /opt/xlstmd/share/ /usr/local/share/
ENV XLSTMD_LISTEN=0.0.0.0:50051 \
    XLSTMD_HTTP_LISTEN=0.0.0.0:9464 \
    XLSTMD_STATE_DIR=/var/lib/xlstmd/state \
    XLSTMD_LOG_FORMAT=json \
    XLSTMD_IMAGE_VARIANT=${VARIANT}
# What the NVIDIA container runtime reads when a GPU is assigned (the Kubernetes device plugin,
# or `docker run --gpus`): the driver's compute libraries and a CUDA 13 driver. Inert in the
# CPU variant, which gets no GPU. NVIDIA_VISIBLE_DEVICES is deliberately not set: "all" in an
# image hands every GPU of the node to pods that requested none.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    NVIDIA_REQUIRE_CUDA="cuda>=13.0"
LABEL org.opencontainers.image.title="xlstmd" \
      org.opencontainers.image.description="xLSTM chat inference server (${VARIANT})"
EXPOSE 50051 9464 8080
VOLUME ["/var/lib/xlstmd/state"]
USER 10001:10001
WORKDIR /var/lib/xlstmd
HEALTHCHECK --interval=10s --timeout=6s --start-period=60s --retries=3 \
  CMD ["/usr/local/bin/xlstm", "health", "--server", "127.0.0.1:50051", "--timeout", "5s"]
ENTRYPOINT ["/usr/local/bin/xlstmd"]
