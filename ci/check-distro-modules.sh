#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-only
#
# Inspect (and load, against a fake kernel) every .ko of Debian's current
# linux-image packages for amd64, arm64 and s390x with percpu-loader, and
# fail on any parse/inspect/load error or wrong percpu verdict (s390x
# modules must define their percpu variables weak and reach them through the
# GOT: --expect-weak-got).
#
# Needs root (dpkg --add-architecture, apt-get update) and Debian's archive.
# Environment:
#   ARCHES="amd64 arm64 s390x"   which Debian architectures to check
#   WORK=/path                   where to download and unpack (default: a temp dir, removed at exit)
#   KEEP=1                       keep WORK
set -euo pipefail

ARCHES=${ARCHES:-"amd64 arm64 s390x"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${WORK:-}" ]; then
	WORK=$(mktemp -d /tmp/distro-modules.XXXXXX)
	[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
fi
mkdir -p "$WORK"
SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo

native=$(dpkg --print-architecture)
need_update=0
for a in $ARCHES; do
	if [ "$a" != "$native" ] && ! dpkg --print-foreign-architectures | grep -qx "$a"; then
		$SUDO dpkg --add-architecture "$a"
		need_update=1
	fi
done
if [ $need_update = 1 ] || [ -z "$(apt-cache policy "linux-image-$native" 2>/dev/null)" ]; then
	$SUDO apt-get update -qq
fi

echo "== building the inspect-tree example"
(cd "$ROOT" && cargo build -q --release -p percpu-loader --example inspect-tree)
TOOL="$ROOT/target/release/examples/inspect-tree"

status=0
summary=""
for a in $ARCHES; do
	# The meta package linux-image-<arch> depends on the current ABI's image.
	pkg=$(apt-cache depends "linux-image-$a:$a" 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
	pkg=${pkg%%:*}
	if [ -z "$pkg" ]; then
		echo "cannot find the kernel image package for $a" >&2
		status=1
		continue
	fi
	echo "== $a: $pkg"
	mkdir -p "$WORK/deb" "$WORK/$a"
	if ! ls "$WORK/deb/${pkg}_"*"_$a.deb" >/dev/null 2>&1; then
		# apt-get download as root warns that _apt cannot write here: harmless.
		(cd "$WORK/deb" && apt-get download -q "$pkg:$a" 2>&1 | grep -v "^W: Download is performed unsandboxed" || true)
	fi
	deb=$(ls "$WORK/deb/${pkg}_"*"_$a.deb" | head -1)
	dpkg-deb -x "$deb" "$WORK/$a"
	# Newer kernels ship compressed modules.
	find "$WORK/$a" -name '*.ko.xz' -exec xz -d -f {} +
	find "$WORK/$a" -name '*.ko.zst' -exec zstd -q -d --rm -f {} +
	find "$WORK/$a" -name '*.ko.gz' -exec gzip -d -f {} +
	extra=()
	[ "$a" = s390x ] && extra=(--expect-weak-got)
	if out=$("$TOOL" "$WORK/$a" --load "${extra[@]}" 2>"$WORK/$a.errors"); then
		:
	else
		status=1
		echo "FAILED ($a): first problems:" >&2
		head -20 "$WORK/$a.errors" >&2
	fi
	echo "$out"
	mods=$(echo "$out" | awk -F': ' '/^modules:/ {print $2}')
	pcpu=$(echo "$out" | awk -F': ' '/^modules with percpu data:/ {print $2}')
	if [ "${mods:-0}" -lt 500 ] || [ "${pcpu:-0}" -lt 1 ]; then
		echo "FAILED ($a): implausible counts (modules ${mods:-0}, with percpu ${pcpu:-0})" >&2
		status=1
	fi
	summary="$summary$a ($pkg): $mods modules, $pcpu with percpu data\n"
	rm -rf "${WORK:?}/$a"
done
printf "== summary\n$summary"
exit $status
