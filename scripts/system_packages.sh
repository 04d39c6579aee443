#!/usr/bin/env bash
# Debian packages the server tests start on 127.0.0.1: redis-server (the production online store),
# postgresql (the production Dagster and MLflow stores) and chromium + chromium-driver (the UI test).
# Installs only what is missing; needs root (or passwordless sudo) and the Debian mirror.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
{ command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "system_packages: cannot install ${missing[*]} without root; the tests that need them will be skipped (CI fails)." >&2
  exit 0
fi
echo "system_packages: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
