#!/usr/bin/env bash
# Real kernel code on all six arches: build the test modules with a real
# kernel tree's own Kbuild (Debian's linux-source-6.1 unless --tree), run
# them in the emulators, and show that a broken percpu header is caught.
#
#   ci/kernel.sh [--tree DIR] [--no-mutants]
#
# 1. `percpu-bed kbuild --check-reproducible` for the six targets (every
#    .ko is built twice and must be byte-identical);
# 2. the same against Debian's configured header packages (amd64, arm64,
#    s390x), unless --tree;
# 3. every built module on every arch across ci/kernel-matrix.toml (1 to
#    4096 CPUs as NR_CPUS allows, NUMA groups, a sparse mask, far modules):
#    lib/percpu_test.c must PASS (its expectation: returns -EAGAIN, prints
#    "percpu test done"), modules with a `[planted]` expectation be CAUGHT;
# 4. header mutants: a hard-linked copy of the tree with one percpu header
#    changed the way a real bug did, built and run again.  percpu_test
#    must FAIL with the WARN's file:line on exactly the arches the change
#    reaches, and PASS on the others.
#
# Nothing from the tree enters the checkout: sources, build directories
# and mutants live in the cache (PERCPU_BED_CACHE, default
# ~/.cache/percpu-bed); outputs in target/kernel/.
set -euo pipefail
cd "$(dirname "$0")/.."

tree_args=()
mutants=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tree) tree_args=(--tree "$(realpath "$2")"); shift 2 ;;
    --no-mutants) mutants=0; shift ;;
    *) echo "usage: ci/kernel.sh [--tree DIR] [--no-mutants]" >&2; exit 2 ;;
  esac
done

ci/deps.sh --kbuild
export UNICORN_NO_PKG_CONFIG=1
cargo build --release --locked -q
bed=target/release/percpu-bed
out=target/kernel
cache="${PERCPU_BED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/percpu-bed}"
rm -rf "$out"
mkdir -p "$out"
failures=0
fail() { echo "ci/kernel.sh: FAILED: $*" >&2; failures=$((failures + 1)); }

# The bed's name for a kbuild target directory.
bed_arch() { case "$1" in riscv64) echo km ;; *) echo "$1" ;; esac; }

echo "== kbuild: six targets, built twice (reproducibility)"
"$bed" kbuild "${tree_args[@]}" --check-reproducible -o "$out/stock"
tree_path=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tree"]["path"])' \
  "$out/stock/x86_64/percpu-bed-kbuild.json")

# run_module DIR ARCH EXPECT ARGS...: EXPECT is pass (exit 0) or fail (exit 1).
run_module() {
  local ko=$1 arch=$2 want=$3; shift 3
  local log="$out/logs/${log_tag:-stock}-$(basename "$(dirname "$ko")")-$(basename "$ko" .ko)-$*.log"
  log=${log// /_}
  mkdir -p "$out/logs"
  local rc=0
  "$bed" run --arch "$arch" "$@" "$ko" >"$log" 2>&1 || rc=$?
  case "$want:$rc" in
    pass:0 | fail:1) printf '  %-8s %-26s %-18s %s\n' "$arch" "$(basename "$ko")" "$*" "ok ($want)" ;;
    *) fail "$arch $(basename "$ko") $*: wanted $want, exit $rc (log: $log)"; tail -n 20 "$log" >&2 ;;
  esac
}

echo "== inspect --check: every built module's percpu and relocations"
"$bed" inspect --check "$out"/stock/*/*.ko > "$out/inspect.txt" || fail "inspect --check (see $out/inspect.txt)"
echo "  $(grep -c '^  verdict: follows' "$out/inspect.txt") modules follow the module percpu rules"

echo "== kbuild --debian-headers: Debian's configured amd64, arm64 and s390x kernels"
# The distribution's own configuration (__fentry__, retpolines, IBT, arm64
# pointer authentication, s390x z10 code) is what users run.
if [[ ${#tree_args[@]} -eq 0 ]]; then
  "$bed" kbuild --debian-headers -o "$out/distro" >/dev/null
else
  mkdir -p "$out/distro"
fi

echo "== every module on every arch, across ci/kernel-matrix.toml's configurations"
# Good modules must PASS and planted bugs be CAUGHT: 1..4096 CPUs (up to
# each config's NR_CPUS), NUMA groups, a sparse mask, far modules.
"$bed" matrix --matrix ci/kernel-matrix.toml --junit "$out/kernel-junit.xml" --ktap "$out/kernel.ktap" \
  || fail "the kernel-module matrix (reports: $out/kernel-junit.xml, $out/kernel.ktap)"

echo "== bench: lib/percpu_test.c on six arches beside a QEMU boot to its percpu: line"
# Boot images come from ci/boot-check.sh's cache (Debian's 6.1 kernels);
# a missing one is named, and only the module rows are measured.
boot_cache="${BOOT_CACHE:-$cache/boot}"
boot_args=()
for pair in x86_64=amd64 arm64=arm64; do
  img=$(ls "$boot_cache/${pair#*=}"/boot/vmlinuz-* 2>/dev/null | head -1 || true)
  if [[ -n "$img" ]] && command -v "qemu-system-$([[ ${pair%=*} == arm64 ]] && echo aarch64 || echo x86_64)" >/dev/null; then
    boot_args+=(--boot "${pair%=*}=$img")
  else
    echo "  (no ${pair%=*} boot: no image in $boot_cache/${pair#*=}/boot or no qemu-system; ci/boot-check.sh fetches them)"
  fi
done
"$bed" bench --kbuild "$out/stock" "${boot_args[@]}" --format json > "$out/bench-kernel.json" \
  || fail "bench --kbuild (see $out/bench-kernel.json)"
python3 - "$out/bench-kernel.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for m in r["modules"]:
    print(f"  {m['arch']:<8} {m['module']:<18} {m['cpus']} cpus {m['wall_ms']:8.1f} ms  {m['status']}")
for b in r["boots"]:
    print(f"  {b['arch']:<8} QEMU boot to 'percpu:' {b['wall_ms'] or 0:8.1f} ms  {b['error'] or b['line']}")
PY

# mutant NAME FILE PYTHON-REPLACEMENT "CAUGHT-TARGETS" "ALL-TARGETS" WHY
# FILE is relative to the tree; the replacement is (old, new) text that
# must occur exactly once.
mutant() {
  local name=$1 file=$2 old=$3 new=$4 caught=$5 targets=$6
  local m="$cache/mutants/$name"
  echo "== mutant $name: $file"
  # A copy is used only once complete: an interrupted `cp -al` leaves a
  # partial $m.tmp (and `cp -al tree $m.tmp` onto an existing one nests
  # the tree inside it), so start over from nothing unless the stamp that
  # the copy wrote last names this tree.
  if [[ "$(cat "$m/.percpu-bed-mutant" 2>/dev/null)" != "$tree_path" ]]; then
    mkdir -p "$cache/mutants"
    rm -rf "$m" "$m.tmp"
    cp -al "$tree_path" "$m.tmp"
    echo "$tree_path" > "$m.tmp/.percpu-bed-mutant"
    mv "$m.tmp" "$m"
  fi
  # Break the hard link before editing, and start from the pristine file.
  cp --remove-destination "$tree_path/$file" "$m/$file"
  python3 - "$m/$file" "$old" "$new" <<'PY'
import sys
path, old, new = sys.argv[1:]
text = open(path).read()
if text.count(old) != 1:
    sys.exit(f"mutant: {old!r} occurs {text.count(old)} times in {path} (the tree changed?)")
open(path, "w").write(text.replace(old, new))
PY
  local arch_args=()
  for t in $targets; do arch_args+=(--arch "$t"); done
  "$bed" kbuild --tree "$m" "${arch_args[@]}" -o "$out/mutant-$name" >/dev/null
  local log_tag="mutant-$name"
  for t in $targets; do
    local want=pass
    [[ " $caught " == *" $t "* ]] && want=fail
    run_module "$out/mutant-$name/$t/percpu_test.ko" "$(bed_arch "$t")" "$want" --cpus 2
    if [[ $want == fail ]] && ! grep -q "WARNING at lib/percpu_test.c:[0-9]" "$out/logs/$log_tag-$t-percpu_test---cpus_2.log"; then
      fail "$name on $t: the report does not name the WARN's file:line"
    fi
  done
  # Keep the mutant tree for the next run's incremental build, but pristine.
  cp --remove-destination "$tree_path/$file" "$m/$file"
}

if [[ $mutants == 1 ]]; then
  all="x86_64 arm64 s390x alpha sparc32 riscv64"
  # Greg Thelen's 2013 fix "percpu: fix this_cpu_sub() subtrahend casting
  # for unsigneds", undone: -(val) of an unsigned int added to an unsigned
  # long.  lib/percpu_test.c was written for it.  32-bit sparc32 has
  # long == int, so the bug does not exist there.
  mutant sub-cast include/linux/percpu-defs.h \
    '#define this_cpu_sub(pcp, val)		this_cpu_add(pcp, -(typeof(pcp))(val))' \
    '#define this_cpu_sub(pcp, val)		this_cpu_add(pcp, -(val))' \
    "x86_64 arm64 s390x alpha riscv64" "$all"
  # The generic add_return returning the value before the addition.  All
  # but x86_64 use it: alpha, sparc32 and riscv64 for every width, arm64
  # and s390x for raw_cpu_*/__this_cpu_* (they only define this_cpu_*),
  # which lib/percpu_test.c:122 (__this_cpu_sub_return) catches.
  mutant generic-add-return include/asm-generic/percpu.h \
    $'\t*__p += val;\t\t\t\t\t\t\t\\\n\t*__p;\t\t\t\t\t\t\t\t\\\n})' \
    $'\t*__p += val;\t\t\t\t\t\t\t\\\n\t*__p - val;\t\t\t\t\t\t\t\\\n})' \
    "arm64 s390x alpha sparc32 riscv64" "$all"
  # x86_64's percpu_add_op emitting `inc` for an add of -1.
  mutant x86-dec arch/x86/include/asm/percpu.h \
    'percpu_unary_op(size, qual, "dec", var);' \
    'percpu_unary_op(size, qual, "inc", var);' \
    "x86_64" "x86_64"
  # arm64's LL/SC add_return subtracting (arm64 runs the LL/SC side: the
  # bed applies no alternatives, so LSE atomics are never patched in).
  mutant arm64-add-return arch/arm64/include/asm/percpu.h \
    'PERCPU_RET_OP(add, add, ldadd)' \
    'PERCPU_RET_OP(add, sub, ldadd)' \
    "arm64" "arm64"
fi

if [[ $failures -gt 0 ]]; then
  echo "ci/kernel.sh: $failures check(s) failed" >&2
  exit 1
fi
echo "ci/kernel.sh: every check passed"
