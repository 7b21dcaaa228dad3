#!/usr/bin/env bash
# One command for a newcomer: installs what the machine lacks (a Vulkan driver, npm packages),
# builds, checks the GPU and runs the main job: `ddpo train --config configs/emoji-jpeg.json`, DDPO-IS
# fine-tuning the shipped emoji model (models/emoji-16) on the paper's JPEG compressibility reward,
# on the best available device, writing its report to out/train-emoji-jpeg/. Extra arguments go to
# `ddpo train` (`--reward jpeg_incompressibility`, `--epochs 4`, `--set train.lr=1e-4`, ...).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
bash scripts/setup-vulkan.sh
npm ci --no-audit --no-fund
npm run build
node dist/cli/ddpo.js doctor --brief
rm -rf out/train-emoji-jpeg
node dist/cli/ddpo.js train --config configs/emoji-jpeg.json "$@"
echo "report: out/train-emoji-jpeg/report.html"
