#!/usr/bin/env bash
# Installs what the integration tests need: a real Prosody with mod_privilege (XEP-0356) from
# prosody-modules, and Debian's ejabberd. Idempotent: does nothing when all are present.
#
# The tests start their own Prosody instances (tests/support/prosody.rs) on free loopback ports with
# their own config and data dir, so the system service is neither needed nor wanted: apt is kept from
# starting it (policy-rc.d), and a system prosody that is already running is stopped. The same holds
# for ejabberd (tests/support/ejabberd.rs runs `erl` directly with its own config).
set -euo pipefail

log() { echo "install-test-deps: $*"; }

# Run a command as root: directly when we are root, through sudo (non-interactive) otherwise.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        echo "install-test-deps: need root (or sudo) to run: $*" >&2
        return 1
    fi
}

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

# INSTALL_TEST_DEPS_FORCE=1 runs the apt step even when everything is there.
need_install="${INSTALL_TEST_DEPS_FORCE:-0}"
if ! command -v prosody >/dev/null 2>&1 || ! command -v prosodyctl >/dev/null 2>&1; then
    log "prosody is missing"
    need_install=1
fi
if ! find_mod_privilege >/dev/null; then
    log "mod_privilege (prosody-modules) is missing"
    need_install=1
fi
find_ejabberd() {
    ls -d /usr/lib/x86_64-linux-gnu/ejabberd-*/ebin /usr/lib/*/ejabberd-*/ebin 2>/dev/null | head -n1
}
if ! command -v erl >/dev/null 2>&1 || [ -z "$(find_ejabberd)" ]; then
    log "ejabberd is missing"
    need_install=1
fi

if [ "$need_install" -eq 1 ]; then
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    cleanup() {
        if [ "$created_policy" -eq 1 ]; then
            as_root rm -f "$policy"
        fi
    }
    trap cleanup EXIT
    if [ ! -e "$policy" ]; then
        # Exit code 101 = "action forbidden": apt installs the package but does not start the service.
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        created_policy=1
        log "wrote temporary $policy so apt does not start the system prosody"
    fi
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    log "apt-get install prosody prosody-modules ejabberd"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prosody prosody-modules ejabberd >/dev/null
    cleanup
    created_policy=0
    trap - EXIT
else
    log "prosody, mod_privilege and ejabberd already installed, nothing to install"
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
if [ -z "$(find_ejabberd)" ]; then
    echo "install-test-deps: ejabberd still missing after install" >&2
    exit 1
fi
log "ejabberd: $(find_ejabberd) ($(dpkg-query -W -f='${Version}' ejabberd 2>/dev/null || echo unknown version))"

# A system prosody is not used by the tests; stop it only if it is running (it holds 5222/5269/5347 on
# all interfaces otherwise). Note: Debian 12's /etc/init.d/prosody `stop` is a silent no-op (it
# matches the process name lua5.2, but prosody runs on lua5.4), hence the fallbacks.
system_prosody_pid() {
    local pid=""
    if [ -r /run/prosody/prosody.pid ]; then
        pid="$(cat /run/prosody/prosody.pid 2>/dev/null || true)"
    fi
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        echo "$pid"
        return 0
    fi
    if command -v pgrep >/dev/null 2>&1; then
        pid="$(pgrep -u prosody -f '/usr/bin/prosody' 2>/dev/null | head -n1 || true)"
        if [ -n "$pid" ]; then
            echo "$pid"
            return 0
        fi
    fi
    return 1
}
wait_gone() {
    local i
    for i in $(seq 1 "${1:-50}"); do
        system_prosody_pid >/dev/null || return 0
        sleep 0.1
    done
    return 1
}
if pid="$(system_prosody_pid)"; then
    log "stopping the running system prosody (pid $pid)"
    as_root service prosody stop >/dev/null 2>&1 || true
    if ! wait_gone 10; then
        as_root prosodyctl stop >/dev/null 2>&1 || true
    fi
    if ! wait_gone 30 && pid="$(system_prosody_pid)"; then
        as_root kill -TERM "$pid" 2>/dev/null || true
    fi
    if wait_gone; then
        log "system prosody stopped"
    else
        log "WARNING: could not stop the system prosody (pid $(system_prosody_pid || true))"
    fi
else
    log "no system prosody running"
fi
