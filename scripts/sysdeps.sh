#!/usr/bin/env bash
# Install the system libraries jifang needs when they are missing (Debian/Ubuntu, as root).
# Each line: a check command, then the Debian package that satisfies it.
set -euo pipefail

need=()
have_lib() { ldconfig -p 2>/dev/null | grep -q "$1"; }

have_lib 'libGL.so.1' || need+=(libgl1)          # opencv-python links libGL
have_lib 'libglib-2.0.so.0' || need+=(libglib2.0-0)
have_lib 'libgomp.so.1' || need+=(libgomp1)      # onnxruntime's OpenMP runtime

if [ "${JIFANG_BROWSER_TESTS:-1}" = "1" ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
  # The pages are Chinese first: without a CJK font Chromium draws every character as a box.
  fc-list :lang=zh 2>/dev/null | grep -q . || need+=(fonts-wqy-microhei)
fi

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "sysdeps: installing ${need[*]}"
if [ "$(id -u)" != "0" ]; then
  echo "sysdeps: need root to install: ${need[*]} (run: sudo apt-get install -y ${need[*]})" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
