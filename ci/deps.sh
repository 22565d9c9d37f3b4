#!/usr/bin/env bash
# Install (or name) the Debian packages percpu-bed needs.
#
#   ci/deps.sh            build + run: cmake, clang/libclang (Unicorn's vendored
#                         build and bindgen), pkg-config, qemu-user (qemu-alpha)
#   ci/deps.sh --cross    also the cross compilers fixtures/build uses
#   ci/deps.sh --kbuild   the cross compilers and what a kernel tree's Kbuild
#                         needs (percpu-bed kbuild, ci/kernel.sh)
#
# As root it installs what is missing with apt-get; otherwise it uses sudo
# when that works without a password, and if neither is possible it prints
# the exact command to run and exits 1.
set -euo pipefail

pkgs=(cmake clang libclang-dev pkg-config qemu-user binutils-multiarch xz-utils tmux)
if [[ "${1:-}" == "--cross" || "${1:-}" == "--kbuild" ]]; then
  pkgs+=(gcc-aarch64-linux-gnu gcc-sparc64-linux-gnu gcc-alpha-linux-gnu
         gcc-s390x-linux-gnu gcc-riscv64-linux-gnu)
fi
if [[ "${1:-}" == "--kbuild" ]]; then
  pkgs+=(gcc make flex bison bc libelf-dev libssl-dev python3 rsync kmod)
fi

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ! command -v cargo >/dev/null; then
  echo "percpu-bed: cargo is missing: install Rust (rustup) first" >&2
  exit 1
fi
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "percpu-bed: installing missing Debian packages: ${missing[*]}" >&2
if [[ $(id -u) -eq 0 ]]; then
  sudo=()
elif sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "percpu-bed: missing packages; run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
