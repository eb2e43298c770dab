#!/usr/bin/env bash
# medv set-up: makes a fresh Debian 12 machine (with Node >= 20) and a fresh clone ready for
# `npm test` and `npm run demo` (package.json runs this as `pretest` and `predemo`).
#   1. apt packages (installed when missing and we are root; otherwise named with the exact command)
#   2. npm ci when node_modules is missing or older than package-lock.json
#   3. the native addon (node-gyp) when missing or older than its sources; a failure only warns
#      (src/native.ts falls back to JavaScript)
#   4. npm run build (tsc + the test guest in vm/build), every time
#   5. the Linux test guest (scripts/build-linux-guest.js): Debian packages fetched once with
#      `apt-get download` into vm/build/linux/debs; rebuilt only when vm/linux or the .debs change;
#      then its 9p variant (--variant 9p: Debian's generic kernel, for the shared-folder test) the same way
#   6. reports whether QEMU tests can use KVM
# One line per step when nothing is missing; command output is shown only when a step fails; a step
# that runs longer than 30 s says so every 30 s, and its line ends with how long it took.
# Non-interactive (CI=true, no stdin). MEDV_SETUP_APT_PACKAGES overrides the package list (for testing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'medv setup: %s\n' "$*"; }
die() { printf 'medv setup: ERROR: %s\n' "$*" >&2; exit 1; }

LOG="$(mktemp "${TMPDIR:-/tmp}/medv-setup.XXXXXX")"
TICKER=""
trap 'rm -f "$LOG"; [ -z "$TICKER" ] || kill "$TICKER" 2>/dev/null' EXIT

# duration SECONDS: "42 s", "3 min 5 s"
duration() { if [ "$1" -lt 60 ]; then printf '%d s' "$1"; else printf '%d min %d s' $(($1 / 60)) $(($1 % 60)); fi; }

# run_logged DESCRIPTION CMD...: runs CMD with its output in $LOG; on failure prints the log's tail.
# While it runs, a line every 30 s says it still does (a loaded machine takes minutes for npm ci);
# STEP_TIME is then its duration, " (3 min 5 s)", for the step's closing line (empty under 2 s).
STEP_TIME=""
run_logged() {
  local what="$1"; shift
  local start=$SECONDS rc=0
  (
    s=""
    trap '[ -z "$s" ] || kill "$s" 2>/dev/null; exit 0' TERM
    n=0
    while :; do
      sleep 30 >/dev/null 2>&1 </dev/null &
      s=$!
      wait "$s"
      n=$((n + 30))
      say "still running $what ($(duration "$n"))…"
    done
  ) &
  TICKER=$!
  if "$@" </dev/null >"$LOG" 2>&1; then rc=0; else rc=$?; fi
  kill "$TICKER" 2>/dev/null || true
  wait "$TICKER" 2>/dev/null || true
  TICKER=""
  local took=$((SECONDS - start))
  STEP_TIME=""
  [ "$took" -lt 2 ] || STEP_TIME=" ($(duration "$took"))"
  [ "$rc" -ne 0 ] || return 0
  printf 'medv setup: %s failed (exit %d) after %s; last lines of its output:\n' "$what" "$rc" "$(duration "$took")" >&2
  tail -n 60 "$LOG" >&2
  return "$rc"
}

# --- 0. node
command -v node >/dev/null || die "node is not installed (Node.js 20 or newer is required)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || die "Node.js $(node -v) is too old: 20 or newer is required"

# --- 1. apt packages
# qemu-system-x86 qemu-utils: guests, qemu-img/qemu-io/qemu-nbd; nasm: the test guest;
# libvhdi-utils python3-libvhdi: VHD interop peers; nginx-light: HTTP range peer; fio: disk benches;
# nbdkit libnbd-bin: NBD peers (nbdkit, nbdinfo, nbdcopy); g++ make: node-gyp for the native addon;
# libgcrypt20-dev: the addon's AES-XTS (VAES code that Node's OpenSSL 3.0 lacks; native/README.md);
# qemu-system-gui: `medv vm --display window`; xvfb x11-apps vncsnapshot libjpeg-turbo-progs: display tests
# (an X server, xwd, a real VNC client, djpeg);
# e2fsprogs mtools: the Linux test guest's disk (mke2fs -d, debugfs; FAT boot partition) without mounts;
# zsync rsync: the peers `medv image fetch` is measured against (test/transfer, bench/transfer); zstd: the
# "changed blocks compressed alone" yardstick of the pack and fetch tests.
# casync: the packer `medv image pack` is measured against (bench/transfer/pack.ts).
# postgresql: the server store's tests start their own cluster (initdb, pg_ctl) for the PostgreSQL path.
# faketime: the workspace tests set a command's clock back or forward (libfaketime), as a user would;
# medv itself has no clock hook.
# passt: a VM's NAT network (`medv vm --network nat`) without the host's loopback (src/hypervisor/usernet.ts).
# chromium: the console's browser tests drive it with playwright-core (which downloads no browser).
read -r -a packages <<<"${MEDV_SETUP_APT_PACKAGES:-qemu-system-x86 qemu-utils nasm libvhdi-utils python3-libvhdi nginx-light fio nbdkit libnbd-bin g++ make libgcrypt20-dev qemu-system-gui xvfb x11-apps vncsnapshot libjpeg-turbo-progs e2fsprogs mtools zsync rsync zstd casync postgresql faketime passt chromium}"
if command -v dpkg-query >/dev/null; then
  missing=()
  for p in "${packages[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
    [ "$status" = "install ok installed" ] || missing+=("$p")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    say "apt packages: all ${#packages[@]} installed"
  else
    install_cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
      printf 'medv setup: ERROR: missing apt packages: %s\n' "${missing[*]}" >&2
      printf "medv setup: install them as root, then run again:\n  sudo sh -c '%s'\n" "$install_cmd" >&2
      exit 1
    fi
    say "apt packages: installing ${missing[*]}"
    run_logged "apt-get update" apt-get update -q || exit 1
    run_logged "apt-get install" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" || exit 1
    say "apt packages: installed ${missing[*]}$STEP_TIME"
  fi
else
  say "apt packages: no dpkg-query (not Debian?); make sure these are installed: ${packages[*]}"
fi

# --- 2. npm dependencies
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "node_modules: missing or older than package-lock.json, running npm ci"
  run_logged "npm ci" npm ci --no-audit --no-fund || exit 1
  say "node_modules: installed$STEP_TIME"
else
  say "node_modules: up to date"
fi

# --- 3. native addon (optional: src/native.ts has a JavaScript fallback)
if [ -f binding.gyp ]; then
  addon=build/Release/medv.node
  stale=""
  if [ ! -f "$addon" ]; then
    stale="missing"
  elif [ -n "$(find binding.gyp native -newer "$addon" -print -quit 2>/dev/null)" ]; then
    stale="older than its sources"
  fi
  if [ -n "$stale" ]; then
    say "native addon: $stale, building (node-gyp rebuild)"
    # package.json's install script (`node-gyp rebuild || echo ...`) runs npm's bundled node-gyp;
    # it always exits 0, so success is the addon file being there and new.
    rm -f "$addon"
    run_logged "node-gyp rebuild" npm run --silent install || true
    if [ -f "$addon" ]; then
      say "native addon: built$STEP_TIME"
    else
      say "WARNING: native addon did not build; medv uses its JavaScript fallback (slower). node-gyp said:"
      tail -n 15 "$LOG" | sed 's/^/    /'
    fi
  else
    say "native addon: up to date"
  fi
else
  say "native addon: no binding.gyp, skipped"
fi

# --- 4. build (tsc + test guest)
run_logged "npm run build" npm run --silent build || exit 1
say "build: ok (tsc, vm/build/guest.img)$STEP_TIME"

# --- 5. the Linux test guest (vm/linux; vm/README.md): cached, one line when up to date
run_logged "the Linux test guest (node scripts/build-linux-guest.js)" node scripts/build-linux-guest.js || exit 1
say "linux guest: $(tail -n 1 "$LOG" | sed 's/^build-linux-guest: //')$STEP_TIME"
run_logged "the Linux test guest's 9p variant (node scripts/build-linux-guest.js --variant 9p)" node scripts/build-linux-guest.js --variant 9p || exit 1
say "linux guest (9p): $(tail -n 1 "$LOG" | sed 's/^build-linux-guest: //')$STEP_TIME"

# --- 6. KVM
if [ ! -e /dev/kvm ]; then
  say "kvm: no /dev/kvm; QEMU tests run under TCG only"
elif [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
  say "kvm: /dev/kvm not usable by $(id -un) (add the user to group kvm); QEMU tests run under TCG only"
else
  say "kvm: usable; the guest boot tests run under KVM and TCG (MEDV_TEST_ACCEL=tcg for TCG only), the other VM tests under MEDV_ACCEL (npm test: tcg unless set)"
fi
