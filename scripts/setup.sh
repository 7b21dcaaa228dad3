#!/usr/bin/env bash
# One command for a newcomer: installs what the machine lacks (a Vulkan driver, npm packages),
# builds, checks the GPU and runs the main job (for now: `ddpo demo`, a small network trained on
# the best available device).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
bash scripts/setup-vulkan.sh
npm ci --no-audit --no-fund
npm run build
node dist/cli/ddpo.js doctor --brief
node dist/cli/ddpo.js demo "$@"
