#!/usr/bin/env bash
# Installs what the integration tests need: a real Prosody with mod_privilege (XEP-0356) from
# prosody-modules. Idempotent: does nothing when both are present.
#
# The tests start their own Prosody instances (tests/support/prosody.rs) on free loopback ports with
# their own config and data dir, so the system service is neither needed nor wanted: apt is kept from
# starting it (policy-rc.d), and a system prosody that is already running is stopped.
set -euo pipefail

log() { echo "install-test-deps: $*"; }

# Run as root directly, through sudo when we are not root, or fail clearly.
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo -n)
else
    echo "install-test-deps: need root (or sudo) to install prosody" >&2
    exit 1
fi

find_mod_privilege() {
    local p
    for p in /usr/lib/prosody/modules/mod_privilege/mod_privilege.lua \
             /usr/lib/prosody/modules/mod_privilege.lua \
             /usr/local/lib/prosody/modules/mod_privilege/mod_privilege.lua; do
        if [ -f "$p" ]; then
            echo "$p"
            return 0
        fi
    done
    if command -v dpkg >/dev/null 2>&1; then
        p="$(dpkg -L prosody-modules 2>/dev/null | grep '/mod_privilege\.lua$' | head -n1 || true)"
        if [ -n "$p" ] && [ -f "$p" ]; then
            echo "$p"
            return 0
        fi
    fi
    return 1
}

need_install=0
if ! command -v prosody >/dev/null 2>&1 || ! command -v prosodyctl >/dev/null 2>&1; then
    log "prosody is missing"
    need_install=1
fi
if ! find_mod_privilege >/dev/null; then
    log "mod_privilege (prosody-modules) is missing"
    need_install=1
fi

if [ "$need_install" -eq 1 ]; then
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    cleanup() {
        if [ "$created_policy" -eq 1 ]; then
            "${SUDO[@]}" rm -f "$policy"
        fi
    }
    trap cleanup EXIT
    if [ ! -e "$policy" ]; then
        # Exit code 101 = "action forbidden": apt installs the package but does not start the service.
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod 755 "$policy"
        created_policy=1
        log "wrote temporary $policy so apt does not start the system prosody"
    fi
    log "apt-get update"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    log "apt-get install prosody prosody-modules"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prosody prosody-modules >/dev/null
    cleanup
    created_policy=0
    trap - EXIT
else
    log "prosody and mod_privilege already installed, nothing to install"
fi

if ! command -v prosody >/dev/null 2>&1; then
    echo "install-test-deps: prosody still missing after install" >&2
    exit 1
fi
mod="$(find_mod_privilege)" || {
    echo "install-test-deps: mod_privilege.lua still missing after install" >&2
    exit 1
}
log "prosody: $(command -v prosody) ($(dpkg-query -W -f='${Version}' prosody 2>/dev/null || echo unknown version))"
log "mod_privilege: $mod"

# A system prosody is not used by the tests; stop it only if it is running (it holds 5222/5269/5347 on
# all interfaces otherwise).
running=0
if [ -f /run/prosody/prosody.pid ] && pid="$(cat /run/prosody/prosody.pid 2>/dev/null)" \
    && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    running=1
elif command -v pgrep >/dev/null 2>&1 && pgrep -u prosody >/dev/null 2>&1; then
    running=1
fi
if [ "$running" -eq 1 ]; then
    log "stopping the running system prosody service"
    "${SUDO[@]}" service prosody stop >/dev/null 2>&1 || "${SUDO[@]}" prosodyctl stop >/dev/null 2>&1 || true
else
    log "no system prosody running"
fi
