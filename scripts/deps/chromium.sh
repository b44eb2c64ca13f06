#!/usr/bin/env bash
# Headless Chromium and its WebDriver, for the dashboard's browser test
# (tests/dashboard.rs). Debian packages; a second run does nothing.
set -euo pipefail
dpkg -s chromium chromium-driver >/dev/null 2>&1 && exit 0
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
