#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-only
#
# Boot Debian's 6.1 kernels (amd64, arm64, s390x) under QEMU TCG (no initrd: the boot stops long
# before the root mount is needed) at several -smp/maxcpus/NUMA/
# percpu_alloc=page configurations and compare every `setup_percpu:`,
# `percpu:` and `pcpu-alloc:` line of the boot log with what
# `percpu-bed layout --kernel 6.1` prints for the same inputs.
#
# Inputs given to the model, per boot: the arch, the possible CPUs (maxcpus
# or -smp), the node of each CPU (QEMU's -numa cpus=; hot-pluggable CPUs
# beyond -smp get nodes round-robin, as the kernel assigns them), the node
# memory sizes, percpu_alloc=, and the static percpu size: from the
# kernel's System.map when the -dbg package is cached (BOOT_DBG=1 downloads
# it, ~800 MB for arm64), else for amd64 from the .data..percpu section of
# the vmlinux inside the bzImage, else (arm64 without System.map) from the
# first boot's own `percpu:` line, which the report then says.
#
# Usage: ci/boot-check.sh [--quick] [--only NAME]... [--list]
#   --quick   four boots (about 1-3 minutes under TCG), what .ci/run runs;
#             the full set adds 11 more (amd64, arm64, s390x with
#             qemu-system-misc)
# Environment:
#   BOOT_CACHE=DIR   downloads and logs (default ~/.cache/percpu-bed/boot,
#                    outside the checkout)
#   BOOT_DBG=1       also download the -dbg packages for System.map
#   BOOT_TIMEOUT=S   seconds per boot before giving up (default 240)
#   BED=PATH         the percpu-bed binary (default: target/release, built)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${BOOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/percpu-bed/boot}
TIMEOUT=${BOOT_TIMEOUT:-240}
QUICK=0
LIST=0
ONLY=()
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) QUICK=1 ;;
	--list) LIST=1 ;;
	--only) ONLY+=("$2"); shift ;;
	-h|--help) sed -n '2,/^set -e/p' "$0" | sed 's/^# \{0,1\}//;/^set -e/d'; exit 0 ;;
	*) echo "boot-check: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done

# name arch smp maxcpus nodes(mem per node, MiB; - for none) cpu-nodes percpu_alloc quick
# cpu-nodes: the node of each possible CPU in order ("-": no NUMA).
CONFIGS=(
	"amd64-smp1        amd64 1 1 -        -               embed q"
	"amd64-smp2-page   amd64 2 2 -        -               page  q"
	"amd64-numa-2x1G   amd64 2 2 1024,1024 0,1            embed q"
	"arm64-smp2        arm64 2 2 -        -               embed q"
	"amd64-smp4-max8   amd64 4 8 -        -               embed -"
	"amd64-smp3-page   amd64 3 3 -        -               page  -"
	"amd64-numa-4x512M amd64 4 4 512,512,512,512 0,1,2,3  embed -"
	"amd64-numa-hotplug amd64 2 4 1024,1024 0,1,0,1       embed -"
	"amd64-numa-memless amd64 4 4 2048,0  0,0,1,1         embed -"
	"arm64-smp1-page   arm64 1 1 -        -               page  -"
	"arm64-smp4        arm64 4 4 -        -               embed -"
	"arm64-numa-2x1G   arm64 4 4 1024,1024 0,0,1,1        embed -"
	"arm64-smp9-gicv3  arm64 9 9 -        -               embed -"
	"s390x-smp2        s390x 2 2 -        -               embed -"
	"s390x-smp5        s390x 5 5 -        -               embed -"
)

selected() {
	local name=$1 quick=$2
	if [ ${#ONLY[@]} -gt 0 ]; then
		local o
		for o in "${ONLY[@]}"; do [ "$o" = "$name" ] && return 0; done
		return 1
	fi
	[ $QUICK = 0 ] || [ "$quick" = q ]
}

if [ $LIST = 1 ]; then
	for c in "${CONFIGS[@]}"; do
		set -- $c
		selected "$1" "$8" && echo "$c"
	done
	exit 0
fi

mkdir -p "$CACHE/deb" "$CACHE/logs"
SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo

need_pkgs=()
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
command -v qemu-system-aarch64 >/dev/null || need_pkgs+=(qemu-system-arm)
want_s390x=0
for c in "${CONFIGS[@]}"; do
	set -- $c
	[ "$2" = s390x ] && selected "$1" "$8" && want_s390x=1
done
if [ $want_s390x = 1 ]; then
	command -v qemu-system-s390x >/dev/null || need_pkgs+=(qemu-system-misc)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
	if [ -n "$SUDO" ] && ! sudo -n true 2>/dev/null; then
		echo "boot-check: needs ${need_pkgs[*]}: sudo apt-get install -y ${need_pkgs[*]}" >&2
		exit 2
	fi
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
need_update=0
for fa in arm64 $([ $want_s390x = 1 ] && echo s390x); do
	if ! dpkg --print-foreign-architectures | grep -qx $fa && [ "$(dpkg --print-architecture)" != $fa ]; then
		$SUDO dpkg --add-architecture $fa
		need_update=1
	fi
done
[ $need_update = 0 ] || $SUDO apt-get update -qq

BED=${BED:-$ROOT/target/release/percpu-bed}
if [ "${BED}" = "$ROOT/target/release/percpu-bed" ]; then
	(cd "$ROOT" && UNICORN_NO_PKG_CONFIG=1 cargo build -q --release --locked)
fi

# The kernel image of Debian arch $1 (the 6.1 ABI the meta package names),
# unpacked under $CACHE/$1; prints the unpacked directory.
kernel_pkg() {
	local a=$1 pkg
	pkg=$(apt-cache depends "linux-image-$a:$a" 2>/dev/null | awk '/Depends: linux-image-6\.1\.0-/ {print $2; exit}')
	pkg=${pkg%%:*}
	[ -n "$pkg" ] || { echo "boot-check: no linux-image-6.1.0-*-$a in the archive" >&2; return 1; }
	echo "$pkg"
}
# Downloads and unpacks land beside their final place and are renamed into
# it, so an interrupted run never leaves a truncated .deb or a half-unpacked
# /boot that a later run would take as complete.
download() {
	local spec=$1 tmp
	tmp=$(mktemp -d "$CACHE/deb/.download.XXXXXX")
	(cd "$tmp" && apt-get download -q "$spec" 2>&1 | grep -v "^W: Download is performed unsandboxed" >&2 || true)
	mv "$tmp"/*.deb "$CACHE/deb/" 2>/dev/null || echo "boot-check: apt-get download $spec fetched nothing" >&2
	rm -rf "$tmp"
}
unpack() {
	local a=$1 pkg deb tmp
	pkg=$(kernel_pkg "$a")
	ls "$CACHE/deb/${pkg}_"*"_$a.deb" >/dev/null 2>&1 || download "$pkg:$a"
	deb=$(ls "$CACHE/deb/${pkg}_"*"_$a.deb" | head -1)
	if [ ! -d "$CACHE/$a/boot" ]; then
		mkdir -p "$CACHE/$a"
		tmp=$(mktemp -d "$CACHE/$a/.unpack.XXXXXX")
		dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" --wildcards './boot/*'
		mv "$tmp/boot" "$CACHE/$a/boot"
		rm -rf "$tmp"
	fi
	if [ "${BOOT_DBG:-0}" = 1 ] && ! ls "$CACHE/$a"/usr/lib/debug/boot/System.map-* >/dev/null 2>&1; then
		ls "$CACHE/deb/${pkg}-dbg_"*"_$a.deb" >/dev/null 2>&1 || download "$pkg-dbg:$a"
		tmp=$(mktemp -d "$CACHE/$a/.unpack.XXXXXX")
		dpkg-deb --fsys-tarfile "$CACHE/deb/${pkg}-dbg_"*"_$a.deb" | tar -x -C "$tmp" --wildcards '*System.map*'
		mkdir -p "$CACHE/$a/usr/lib/debug/boot"
		mv "$tmp"/usr/lib/debug/boot/System.map-* "$CACHE/$a/usr/lib/debug/boot/"
		rm -rf "$tmp"
	fi
}

# A static-size option for `percpu-bed layout` for arch $1, or nothing.
static_input() {
	local a=$1 map vmlinuz
	map=$(ls "$CACHE/$a"/usr/lib/debug/boot/System.map-* 2>/dev/null | head -1 || true)
	if [ -n "$map" ]; then
		echo "--system-map $map"
		return
	fi
	if [ "$a" = amd64 ]; then
		vmlinuz=$(ls "$CACHE/$a"/boot/vmlinuz-* | head -1)
		if [ ! -s "$CACHE/$a/vmlinux" ]; then
			# the bzImage payload is xz: decompress the ELF it carries
			python3 - "$vmlinuz" "$CACHE/$a/vmlinux.tmp" <<'PY'
import lzma, sys
data = open(sys.argv[1], 'rb').read()
at = data.find(b'\xfd7zXZ\x00')
if at < 0:
    sys.exit("no xz payload in " + sys.argv[1])
open(sys.argv[2], 'wb').write(lzma.LZMADecompressor().decompress(data[at:]))
PY
			mv "$CACHE/$a/vmlinux.tmp" "$CACHE/$a/vmlinux"
		fi
		echo "--vmlinux $CACHE/$a/vmlinux"
	fi
}

# Boot config $@ and leave its log in $CACHE/logs/NAME.log.
boot() {
	local name=$1 a=$2 smp=$3 max=$4 mem=$5 cpunodes=$6 alloc=$7
	local log=$CACHE/logs/$name.log kernel qemu args=() append
	kernel=$(ls "$CACHE/$a"/boot/vmlinuz-* | head -1)
	append="loglevel=8 ignore_loglevel nokaslr panic=0"
	[ "$alloc" = page ] && append="$append percpu_alloc=page"
	local total=512
	if [ "$mem" != - ]; then
		total=0
		local i=0 m n
		IFS=, read -ra m <<<"$mem"
		IFS=, read -ra n <<<"$cpunodes"
		for sz in "${m[@]}"; do
			total=$((total + sz))
			# present cpus of node i (hot-plug ones are not listed to QEMU)
			local cpus="" c
			for c in $(seq 0 $((smp - 1))); do
				[ "${n[$c]}" = "$i" ] && cpus="${cpus:+$cpus,}cpus=$c"
			done
			if [ "$sz" -gt 0 ]; then
				args+=(-object "memory-backend-ram,id=m$i,size=${sz}M")
				args+=(-numa "node,nodeid=$i${cpus:+,$cpus},memdev=m$i")
			else
				args+=(-numa "node,nodeid=$i${cpus:+,$cpus}")
			fi
			i=$((i + 1))
		done
	fi
	case $a in
	amd64)
		qemu=qemu-system-x86_64
		args+=(-machine q35,accel=tcg -cpu max -m "${total}M" -smp "$smp,maxcpus=$max")
		append="$append console=ttyS0"
		;;
	arm64)
		qemu=qemu-system-aarch64
		local gic=""
		[ "$smp" -gt 8 ] && gic=",gic-version=3"
		args+=(-machine "virt$gic" -cpu cortex-a57 -m "${total}M" -smp "$smp")
		append="$append console=ttyAMA0"
		;;
	s390x)
		# the SCLP console is what -serial connects to
		qemu=qemu-system-s390x
		args+=(-machine s390-ccw-virtio,accel=tcg -m "${total}M" -smp "$smp")
		;;
	esac
	rm -f "$log"
	"$qemu" "${args[@]}" -kernel "$kernel" -append "$append" -display none -serial "file:$log" \
		-monitor none -no-reboot -nodefaults 2>"$log.qemu" &
	local pid=$! t=0
	# The percpu lines come from setup_per_cpu_areas, before the
	# "Kernel command line:" notice of start_kernel: stop there.
	while kill -0 $pid 2>/dev/null; do
		if grep -aq "Kernel command line:" "$log" 2>/dev/null; then
			break
		fi
		sleep 1
		t=$((t + 1))
		if [ $t -ge "$TIMEOUT" ]; then
			echo "  $name: no 'Kernel command line:' after ${TIMEOUT}s" >&2
			break
		fi
	done
	kill $pid 2>/dev/null || true
	wait $pid 2>/dev/null || true
}

# The kernel's percpu lines of a log or of `percpu-bed layout` output.
percpu_lines() {
	tr -d '\r' | sed -E 's/^\[ *[0-9]+\.[0-9]+\] //' | grep -aE '^(setup_percpu|percpu|pcpu-alloc):' || true
}

status=0
unpacked=""
passed=0
failed=0
t0=$(date +%s)
for c in "${CONFIGS[@]}"; do
	set -- $c
	name=$1 a=$2 smp=$3 max=$4 mem=$5 cpunodes=$6 alloc=$7 quick=$8
	selected "$name" "$quick" || continue
	case " $unpacked " in *" $a "*) ;; *) unpack "$a"; unpacked="$unpacked $a" ;; esac
	tb=$(date +%s)
	boot "$name" "$a" "$smp" "$max" "$mem" "$cpunodes" "$alloc"
	log=$CACHE/logs/$name.log
	real=$(percpu_lines <"$log")
	case $a in amd64) arch=x86_64 ;; *) arch=$a ;; esac
	opts=(--kernel 6.1 --arch "$arch" --cpus "$max" --percpu-alloc "$alloc")
	if [ "$cpunodes" != - ]; then
		opts+=(--cpu-nodes "$cpunodes" --node-mem "$(echo "$mem" | sed 's/\([0-9][0-9]*\)/\1M/g')")
	fi
	static=$(static_input "$a")
	note=""
	if [ -z "$static" ]; then
		s=$(echo "$real" | sed -nE 's/^percpu: .* s([0-9]+) r.*/\1/p' | head -1)
		static="--static-size ${s:-0}"
		note=" (static size from the boot log: no System.map cached, BOOT_DBG=1 fetches it)"
	fi
	# shellcheck disable=SC2086
	model=$("$BED" layout "${opts[@]}" $static | percpu_lines)
	secs=$(($(date +%s) - tb))
	if [ -n "$real" ] && [ "$real" = "$model" ]; then
		echo "PASS  $name: $(echo "$real" | wc -l) line(s) match (${secs}s)$note"
		passed=$((passed + 1))
	else
		echo "FAIL  $name (${secs}s)$note"
		echo "  model: percpu-bed layout ${opts[*]} $static"
		diff <(echo "$real") <(echo "$model") | sed 's/^/  /' || true
		[ -n "$real" ] || echo "  (no percpu lines in $log)"
		failed=$((failed + 1))
		status=1
	fi
done
echo "boot-check: $passed passed, $failed failed in $(($(date +%s) - t0)) s (Linux 6.1 model vs Debian's 6.1 kernels; logs in $CACHE/logs)"
exit $status
