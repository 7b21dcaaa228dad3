#!/usr/bin/env bash
# Installs a Vulkan driver that Dawn accepts when the machine has none.
# On a machine without a GPU that is Mesa's software rasteriser (lavapipe) from Debian
# bookworm-backports: Mesa >= 24 is needed, bookworm's own 22.3 is refused by Dawn
# ("Vulkan shaderUniform*ArrayDynamicIndexing required").
set -euo pipefail

have_driver() {
  # Any ICD manifest of a Mesa >= 24 or a vendor driver counts.
  local f
  for f in /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json; do
    [ -e "$f" ] || continue
    case "$f" in
      *lvp_icd*) dpkg --compare-versions "$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || echo 0)" ge 24 && return 0 ;;
      *) return 0 ;;
    esac
  done
  return 1
}

if have_driver && ldconfig -p | grep -q 'libvulkan.so.1'; then
  echo "setup-vulkan: a Vulkan driver is present; nothing to install"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  SUDO=sudo
else
  SUDO=
fi

if ! command -v apt-get >/dev/null; then
  echo "setup-vulkan: no Vulkan driver found and this is not a Debian-like system." >&2
  echo "Install your GPU's Vulkan driver, or Mesa >= 24 (lavapipe, package mesa-vulkan-drivers) and libvulkan1." >&2
  exit 1
fi

. /etc/os-release
codename=${VERSION_CODENAME:-bookworm}
target=
if [ "$codename" = bookworm ]; then
  list=/etc/apt/sources.list.d/bookworm-backports.list
  if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" | $SUDO tee "$list" >/dev/null
  fi
  target="-t bookworm-backports"
fi
echo "setup-vulkan: installing Mesa's lavapipe (mesa-vulkan-drivers, libvulkan1) ${target}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $target \
  mesa-vulkan-drivers libvulkan1 >/dev/null
echo "setup-vulkan: installed mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"
