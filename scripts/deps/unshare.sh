#!/usr/bin/env bash
# tests/container.rs runs harbormaster as PID 1 under
# `unshare --pid --fork --mount-proc` (util-linux). Installs it if missing;
# the test itself fails with a clear message when the kernel refuses the
# namespace (no root, no user namespaces).
set -euo pipefail
command -v unshare >/dev/null 2>&1 && exit 0
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq util-linux >/dev/null
