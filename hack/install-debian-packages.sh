#!/usr/bin/env bash
# Install the Debian packages the tests run as real servers, only those missing. Services are not
# started by the packages (policy-rc.d): the tests start their own instances on loopback ports.
# A package written name/suite (valkey-server/bookworm-backports) comes from that suite, added as an apt
# source of its own when missing.
set -euo pipefail
missing=()
suites=()
for pkg in "$@"; do
  name="${pkg%%/*}"
  dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  [ "$name" != "$pkg" ] && suites+=("${pkg#*/}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
policy=/usr/sbin/policy-rc.d
created=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null && $SUDO chmod +x "$policy" && created=1
fi
trap '[ -n "$created" ] && $SUDO rm -f "$policy"' EXIT
for suite in "${suites[@]}"; do
  list="/etc/apt/sources.list.d/flaskapp-$suite.list"
  grep -rqs "debian $suite " /etc/apt/sources.list /etc/apt/sources.list.d/ \
    || echo "deb http://deb.debian.org/debian $suite main" | $SUDO tee "$list" >/dev/null
done
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "installed: ${missing[*]}"
