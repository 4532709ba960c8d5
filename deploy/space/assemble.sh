#!/usr/bin/env bash
# Lay out a Hugging Face Space for the simlib demo: deploy/space/ (README.md with the Space's settings,
# requirements.txt, app.py), app_gradio.py, the simlib package and a gallery, in one folder ready for
# `gradio deploy` (run inside it) or a `git push` to the Space's repository.
#
#   deploy/space/assemble.sh OUT GALLERY     # GALLERY: a folder of images (product layout, class folders or flat)
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 OUT GALLERY" >&2
  exit 2
fi
out=$1
gallery=$2
repo=$(cd "$(dirname "$0")/../.." && pwd)
if [ ! -d "$gallery" ]; then
  echo "$0: error: no gallery folder $gallery" >&2
  exit 1
fi
if [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then
  echo "$0: error: $out exists and is not empty" >&2
  exit 1
fi
mkdir -p "$out"
cp "$repo"/deploy/space/{README.md,requirements.txt,app.py} "$repo/app_gradio.py" "$out/"
cp -r "$repo/simlib" "$out/simlib"
cp -r "$gallery" "$out/gallery"
find "$out" -name __pycache__ -type d -prune -exec rm -rf {} +
echo "$out: $(find "$out/gallery" -type f | wc -l) gallery files, $(du -sh "$out" | cut -f1) in all; next: cd $out && gradio deploy"
