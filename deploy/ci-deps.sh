#!/usr/bin/env bash
# The Debian packages tests/test_deploy.py needs, installed only when missing:
#   systemd     systemd-analyze (verify and security-check the unit, list syscall groups),
#               and libseccomp2 with it (the MemoryDenyWriteExecute= compatibility test)
#   prometheus  promtool (check deploy/prometheus/prometheus.yml and the dashboard's PromQL);
#               also the Prometheus server the daemon's scrape test runs
#   mosquitto   the MQTT broker tests/test_mqtt.py runs on a loopback port (Home Assistant's
#               discovery, the kill switch over MQTT); its system service is not used
# and the ones tests/test_webpage.py needs:
#   chromium, chromium-driver  a headless browser and its WebDriver (the web page's
#               screenshot test, driven by selenium)
# Idempotent and quiet: prints nothing and touches nothing when everything is present; runs
# `apt-get update` only when something has to be installed; shows apt's output on failure.
# Used by `make test` (and so by .ci/run). Needs root, or sudo without a password prompt.
set -euo pipefail

missing=()
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
libs=$(ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null || true)
[[ $libs == *"libseccomp.so.2 "* ]] || missing+=(libseccomp2)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
[ "${#missing[@]}" -eq 0 ] && exit 0

say() { echo "deploy/ci-deps.sh: $*" >&2; }
if ! command -v apt-get >/dev/null 2>&1; then
    say "missing ${missing[*]} and this is not a Debian-like system (no apt-get);"
    say "install systemd-analyze, promtool, libseccomp, mosquitto, chromium and"
    say "chromedriver yourself"
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    say "missing ${missing[*]}; as root run:"
    say "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
    exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! { "${as_root[@]}" apt-get update -qq \
        && "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
        >"$log" 2>&1; then
    cat "$log" >&2
    say "apt-get install ${missing[*]} failed (output above)"
    exit 1
fi
