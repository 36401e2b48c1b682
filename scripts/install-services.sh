#!/bin/sh
# Installs the Debian packages named as arguments when their programs are missing.
# Needs root and apt-get; elsewhere it says what to install and carries on (the
# tests that need them skip, saying why).
set -u
missing=""
for pkg in "$@"; do
    case "$pkg" in
        etcd-server) bin=etcd ;;
        dnsmasq-base) bin=dnsmasq ;;
        nginx-light) bin=nginx ;;
        chromium) bin=chromium ;;
        python3-dev) bin=python3-config ;;
        *) bin=$pkg ;;
    esac
    command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends $missing >/dev/null \
        || echo "could not install:$missing (the tests that need them will skip)"
else
    echo "not installed:$missing; install them (apt-get install$missing) to run every test"
fi
exit 0
