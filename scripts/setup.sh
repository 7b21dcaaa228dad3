#!/usr/bin/env bash
# One command for a newcomer: installs what the machine lacks (a Vulkan driver, npm packages),
# builds, checks the GPU and runs the main job: a short `ddpo train` run (configs/demo.json) on the
# best available device, writing its report to out/train-demo/. Extra arguments go to `ddpo train`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
bash scripts/setup-vulkan.sh
npm ci --no-audit --no-fund
npm run build
node dist/cli/ddpo.js doctor --brief
rm -rf out/train-demo
node dist/cli/ddpo.js train --config configs/demo.json "$@"
echo "report: out/train-demo/report.html"
