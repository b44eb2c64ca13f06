#!/usr/bin/env bash
# PostgreSQL server binaries (initdb, postgres), for the audit log tests
# (tests/audit*.rs start their own server in a temp dir; nothing runs as a
# service). Debian's package; a second run does nothing.
set -euo pipefail
dpkg -s postgresql >/dev/null 2>&1 && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && exit 0
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
