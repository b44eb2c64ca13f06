#!/usr/bin/env bash
# The project's test command (README "Run the tests", and `.ci/run`):
# installs the peers the tests drive (each `scripts/deps/*.sh`, idempotent and
# quiet), then runs the whole workspace's tests. Extra arguments go to
# `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

for dep in scripts/deps/*.sh; do
    [ -e "$dep" ] || continue
    bash "$dep"
done
# Where the installers put their tools (pip --user, npm prefix).
export PATH="$PWD/target/peers/bin:$HOME/.local/bin:$PATH"
exec cargo test --workspace "$@"
