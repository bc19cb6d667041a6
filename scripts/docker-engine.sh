#!/usr/bin/env bash
# Start a Docker engine and make the local Python base image the tests (and users without a
# registry) build on. Idempotent: an engine that already answers is reused, an image that
# already exists is kept, and the base image is cached as a tarball between runs.
#
#   scripts/docker-engine.sh            # engine + base image
#   BASE_IMAGE=python:3.11-slim-bookworm scripts/docker-engine.sh
#
# Exits 0 with a message on stderr when no engine can be started here (not root, no apt):
# the engine tests then skip with that reason.
set -euo pipefail

BASE_IMAGE="${BASE_IMAGE:-python:3.11-slim-bookworm}"
CACHE="${FLYTE_JUPYTER_CI_CACHE:-$HOME/.cache/flyte-jupyter-ci}"
LOG="${CACHE}/dockerd.log"
mkdir -p "$CACHE"

say() { echo "docker-engine: $*" >&2; }

engine_up() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

if ! engine_up; then
  if [ "$(id -u)" != 0 ]; then say "not root: cannot start an engine"; exit 0; fi
  if ! command -v dockerd >/dev/null 2>&1; then
    if ! command -v apt-get >/dev/null 2>&1; then say "no dockerd and no apt-get"; exit 0; fi
    say "installing docker.io"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
  fi
  # A previous engine killed without cleanup leaves its pid file behind; dockerd refuses to
  # start over a pid file whose process still exists, so clear only a stale one.
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
  fi
  say "starting dockerd (vfs storage, no bridge)"
  nohup dockerd --storage-driver=vfs --iptables=false --bridge=none >"$LOG" 2>&1 &
  for _ in $(seq 1 60); do engine_up && break; sleep 0.5; done
  engine_up || { say "dockerd did not start; see $LOG"; exit 0; }
fi

if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  say "base image $BASE_IMAGE present"; exit 0
fi

TARBALL="$CACHE/base-image.tar.gz"
if [ -s "$TARBALL" ]; then
  say "loading cached base image"
  gunzip -c "$TARBALL" | docker load >/dev/null
  docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && exit 0
fi

# No registry is reachable: make a minimal Debian with Python 3 and import it.
if ! command -v debootstrap >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
MIRROR="$( (grep -rhE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || true) \
  | grep -oE 'https?://[^ ]+/debian/?' | head -n1 || true)"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
ROOTFS="$(mktemp -d)"
trap 'rm -rf "$ROOTFS"' EXIT
say "debootstrap from $MIRROR (about a minute)"
debootstrap --variant=minbase \
  --include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates \
  bookworm "$ROOTFS" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
  || { say "debootstrap failed; see $CACHE/debootstrap.log"; exit 1; }
# The TLS proxy's CA, so that pip inside builds can reach the package index.
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
  cp /usr/local/share/ca-certificates/*.crt "$ROOTFS/usr/local/share/ca-certificates/"
  chroot "$ROOTFS" update-ca-certificates >/dev/null 2>&1 || true
fi
chroot "$ROOTFS" apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/*
tar -C "$ROOTFS" -c . | docker import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
docker save "$BASE_IMAGE" | gzip -1 >"$TARBALL.tmp" && mv "$TARBALL.tmp" "$TARBALL"
say "base image $BASE_IMAGE built and cached at $TARBALL"
