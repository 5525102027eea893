#!/usr/bin/env bash
# Opt-in end-to-end test of the container image, on a machine without a Docker engine or a
# registry (these have podman 4.3, whose `podman run` fails on setrlimit, and mmdebstrap):
#   XLSTMD_IMAGE_TEST=1 scripts/image-test.sh
# 1. mmdebstrap a Debian 12 (bookworm) base from this machine's apt sources; podman import it;
# 2. a build with VARIANT=bogus must fail in its first step with one clear line;
# 3. podman build --isolation=chroot --format docker of the CPU variant, timed;
# 4. mount the image read-only and run its ENTRYPOINT with its ENV as uid 10001 in a private
#    mount namespace (chroot; /tmp and the state dir on tmpfs, as the chart mounts them);
# 5. /readyz answers ready, `xlstm health` from inside the image exits 0, and one gRPC turn from
#    this machine's xlstm gets a reply on loopback.
# Prints the image size and the build time. Needs root (mmdebstrap, mounts), ~25 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${XLSTMD_IMAGE_TEST:-}" != 1 ]; then
  echo "image-test: opt-in; run with XLSTMD_IMAGE_TEST=1 (builds the whole image, ~25 min)"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "image-test: needs root (mmdebstrap, mount namespaces)" >&2; exit 1; }
. scripts/apt-install.sh
apt_install_missing podman mmdebstrap curl
[ -x build/bin/xlstm ] || { echo "image-test: build/bin/xlstm missing (scripts/bootstrap.sh)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/xlstmd-image-test.XXXXXX)
TAG=$(date -u +%Y%m%d)
BASE=localhost/debian:bookworm-$TAG-slim
IMAGE=localhost/xlstmd:image-test
PIDFILE=$WORK/xlstmd.pid
ROOTFS=$WORK/rootfs
cleanup() {
  [ -f "$PIDFILE" ] && kill "$(cat "$PIDFILE")" 2>/dev/null || true
  sleep 1
  podman image unmount "$IMAGE" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== base: mmdebstrap bookworm (minbase) -> $BASE"
mmdebstrap --quiet --variant=minbase bookworm "$WORK/base.tar"
podman import --quiet "$WORK/base.tar" "$BASE" >/dev/null

echo "== VARIANT=bogus must fail at once with one line"
if podman build --isolation=chroot --format docker --build-arg BASE_IMAGE="$BASE" \
     --build-arg VARIANT=bogus -f Dockerfile . > "$WORK/bogus.log" 2>&1; then
  echo "FAIL: a build with VARIANT=bogus succeeded"; exit 1
fi
grep -q "VARIANT must be cpu or cuda, not 'bogus'" "$WORK/bogus.log" ||
  { cat "$WORK/bogus.log"; echo "FAIL: no clear line for VARIANT=bogus"; exit 1; }

echo "== podman build (CPU variant)"
start=$(date +%s)
podman build --isolation=chroot --format docker --build-arg BASE_IMAGE="$BASE" \
  --build-arg VARIANT=cpu --build-arg GIT_COMMIT="$(git rev-parse --short=12 HEAD 2>/dev/null || true)" \
  -t "$IMAGE" -f Dockerfile . > "$WORK/build.log" 2>&1 ||
  { tail -40 "$WORK/build.log"; echo "FAIL: podman build"; exit 1; }
build_s=$(( $(date +%s) - start ))
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
echo "runtime packages: $(sed -n 's/^runtime package: //p' "$WORK/build.log" | sort -u | tr '\n' ' ')"

echo "== run the image's entrypoint as uid 10001 on a read-only root"
MNT=$(podman image mount "$IMAGE")
read -r -a ENVS <<< "$(podman image inspect --format '{{range .Config.Env}}{{.}} {{end}}' "$IMAGE")"
USER_SPEC=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
[ "$USER_SPEC" = "10001:10001" ] || { echo "FAIL: image USER is '$USER_SPEC'"; exit 1; }
ports=$(/usr/bin/python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))')
read -r GRPC HTTP <<< "$ports"
mkdir -p "$ROOTFS"
# The private mount namespace keeps every mount below away from the host's view.
unshare --mount --propagation private --fork /bin/bash -c '
  set -e
  mount --bind "$1" "$2"; mount -o remount,bind,ro "$2"
  mount -t tmpfs -o mode=1777 tmpfs "$2/tmp"
  mount -t tmpfs -o uid=10001,gid=10001,mode=0700 tmpfs "$2/var/lib/xlstmd/state"
  mount -t proc proc "$2/proc"
  mount --bind /dev "$2/dev"
  root=$2
  shift 2
  exec chroot --userspec=10001:10001 "$root" /usr/bin/env -i "$@"
' _ "$MNT" "$ROOTFS" "${ENVS[@]}" "XLSTMD_LISTEN=127.0.0.1:$GRPC" \
  "XLSTMD_HTTP_LISTEN=127.0.0.1:$HTTP" /usr/local/bin/xlstmd \
  > "$WORK/daemon.log" 2>&1 &
echo $! > "$PIDFILE"
ready=""
for _ in $(seq 1 120); do
  ready=$(curl -fsS "http://127.0.0.1:$HTTP/readyz" 2>/dev/null || true)
  [ "$ready" = ready ] && break
  sleep 0.5
done
[ "$ready" = ready ] || { cat "$WORK/daemon.log"; echo "FAIL: /readyz never said ready"; exit 1; }
unshare --mount --propagation private --fork /bin/bash -c '
  mount --bind "$1" "$2"; mount -o remount,bind,ro "$2"
  exec chroot --userspec=10001:10001 "$2" /usr/local/bin/xlstm health --server "127.0.0.1:$3"
' _ "$MNT" "$ROOTFS" "$GRPC" || { echo "FAIL: xlstm health inside the image"; exit 1; }
reply=$(build/bin/xlstm chat --server "127.0.0.1:$GRPC" --message "What does serendipity mean?" \
  --max-tokens 24 --temperature 0 2>/dev/null)
[ -n "$reply" ] || { cat "$WORK/daemon.log"; echo "FAIL: no reply"; exit 1; }
grep -q '"random_weights":false\|random_weights=false' "$WORK/daemon.log" ||
  { cat "$WORK/daemon.log"; echo "FAIL: the image does not serve the bundled demo model"; exit 1; }
echo "reply: $reply"
echo "image-test: OK image=$IMAGE size_bytes=$size size_mb=$((size / 1000000)) build_s=$build_s"
