#!/usr/bin/env bash
# herald end to end: installs Prosody + prosody-modules when missing (root or sudo), starts a local
# Prosody on loopback ports, attaches herald, lets demo users come and go, and prints the JSON
# presence events as the server user world@localhost receives them (stdout; logs on stderr).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh >&2
exec cargo run --locked --example demo
