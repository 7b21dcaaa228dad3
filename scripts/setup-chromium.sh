#!/usr/bin/env bash
# Installs Debian's chromium (for the browser test, test/browser.test.ts) when /usr/bin/chromium is
# missing. Quiet; uses sudo when not root. WebGPU in it needs a Vulkan driver: scripts/setup-vulkan.sh.
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium > /dev/null
[ -x /usr/bin/chromium ] || { echo "setup-chromium: apt-get installed chromium but /usr/bin/chromium is missing" >&2; exit 1; }
echo "setup-chromium: installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
