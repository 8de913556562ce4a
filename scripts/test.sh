#!/usr/bin/env bash
# Runs every check and test of herald. On a fresh Debian/Ubuntu machine it first installs what the
# integration tests need (a real Prosody with prosody-modules), so it needs root or sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# The integration tests start real servers; they must run, never skip.
cargo test --all-targets --locked
