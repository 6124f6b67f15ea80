#!/usr/bin/env bash
# clean_root_check.sh: proves that the README's two commands work on a bare Debian 12 machine.
#
# What it checks: in a fresh `debootstrap --variant=minbase bookworm` root (nothing but Debian's minimal base,
# no compiler, no python3, no npm, no ca-certificates), with a git clone of the repository's committed HEAD at
# /src/main and the data folder bind-mounted read-only beside it at /src/shared, it runs as root with a clean
# environment (env -i: PATH, HOME, LANG=C.UTF-8 and this machine's CA variables only):
#     cd /src/main && bash scripts/demo.sh      then      cd /src/main && bash scripts/test.sh
# logs each to a file, and prints a summary: pass/fail and duration of each, and the last lines of a failure.
# Exit status: 0 when both pass, 1 when either fails, another non-zero status (mostly 2) when the check itself
# could not run (bad option, debootstrap or mount failure).
#
# How to run (as root: it needs debootstrap, chroot and mount; the machine's apt must reach Debian's archive):
#     bash scripts/clean_root_check.sh                  # checks this repository's committed HEAD
#     bash scripts/clean_root_check.sh /path/to/repo    # checks that repository's committed HEAD
# Uncommitted changes are never checked: only what `git clone` gives.
#
# Options:
#     --rev REV       check out REV (a commit, branch or tag of REPO) instead of HEAD
#     --no-shared     leave /src/shared absent, to check that the tests skip with a message
#     --shared DIR    the data folder bound read-only at /src/shared (default: REPO/../shared; absent: skipped)
#     --only demo|test  run just one of the two commands
#     --bare-ca       do not copy this machine's CA bundle into the root nor pass its CA variables: only put its
#                     locally added CAs (/usr/local/share/ca-certificates) where Debian's ca-certificates
#                     package picks them up. Then HTTPS works in the root only if the scripts install
#                     ca-certificates themselves, as on a real bare machine (behind a TLS-inspecting proxy the
#                     default mode would hide a missing ca-certificates).
#     --keep-root     keep the root after the run (by default it is deleted after a pass, kept after a failure)
#     --rebootstrap   discard the cached base tarball and bootstrap again
#     -v, --verbose   also stream the commands' output to the terminal (it always goes to the log files)
#     -h, --help      print this text
# Environment:
#     CLEAN_ROOT_CACHE  folder of the cached base tarball (default /var/tmp/kvshare-clean-root)
#     CLEAN_ROOT_WORK   folder of each run's root and logs (default $CLEAN_ROOT_CACHE/runs)
#     DEBIAN_MIRROR     Debian archive to bootstrap from (default: the first .../debian URI of this machine's
#                       /etc/apt/sources.list.d/debian.sources, else http://deb.debian.org/debian)
#     STEP_TIMEOUT      time limit of each command, in timeout(1)'s syntax (default 4h)
#
# How it works: the first run bootstraps the base (a few minutes) and caches it as a tarball; every run unpacks
# a pristine copy of it into a new folder $CLEAN_ROOT_WORK/<date-time>/root, copies in /etc/resolv.conf, the
# apt sources (debian and debian-security) and the CA certificates, mounts /proc, /sys, /dev, /dev/pts (and
# /src/shared) in it, and unmounts all of them on exit, whatever the outcome. Logs stay in
# $CLEAN_ROOT_WORK/<date-time>/ (demo.log, test.log, and the package lists before and after).
set -euo pipefail

usage() { sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "clean_root_check: $*" >&2; exit 2; }

script_dir=$(cd "$(dirname "$0")" && pwd)
repo=""
rev=""
shared=""
no_shared=0
only=""
bare_ca=0
keep_root=0
rebootstrap=0
verbose=0
while [ $# -gt 0 ]; do
  case $1 in
    --rev) [ $# -ge 2 ] || die "--rev needs a value"; rev=$2; shift 2 ;;
    --no-shared) no_shared=1; shift ;;
    --shared) [ $# -ge 2 ] || die "--shared needs a value"; shared=$2; shift 2 ;;
    --only) [ $# -ge 2 ] || die "--only needs a value"; only=$2; shift 2
            case $only in demo|test) ;; *) die "--only takes demo or test" ;; esac ;;
    --bare-ca) bare_ca=1; shift ;;
    --keep-root) keep_root=1; shift ;;
    --rebootstrap) rebootstrap=1; shift ;;
    -v|--verbose) verbose=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$repo" ] || die "only one repository path"; repo=$1; shift ;;
  esac
done
[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, chroot and mount need it)"
[ -n "$repo" ] || repo=$(git -C "$script_dir/.." rev-parse --show-toplevel)
repo=$(cd "$repo" && pwd -P)
git -C "$repo" rev-parse --verify -q "${rev:-HEAD}^{commit}" >/dev/null || die "$repo has no commit ${rev:-HEAD}"
if [ "$no_shared" -eq 0 ] && [ -z "$shared" ]; then shared=$(dirname "$repo")/shared; fi
if [ "$no_shared" -eq 1 ]; then shared=""; fi
if [ -n "$shared" ] && [ ! -d "$shared" ]; then
  echo "clean_root_check: $shared is absent: /src/shared will be absent too" >&2
  shared=""
fi
[ -z "$shared" ] || shared=$(cd "$shared" && pwd -P)

cache=${CLEAN_ROOT_CACHE:-/var/tmp/kvshare-clean-root}
work=${CLEAN_ROOT_WORK:-$cache/runs}
step_timeout=${STEP_TIMEOUT:-4h}
suite=bookworm
arch=$(dpkg --print-architecture)
if [ -z "${DEBIAN_MIRROR:-}" ]; then
  DEBIAN_MIRROR=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }' \
    /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
fi
mkdir -p "$cache" "$work"
cache=$(cd "$cache" && pwd -P)
work=$(cd "$work" && pwd -P)
case "$cache$work" in *[[:space:]]*) die "CLEAN_ROOT_CACHE and CLEAN_ROOT_WORK must not contain spaces" ;; esac
tarball=$cache/debian-$suite-minbase-$arch.tar.gz

# ---- unmounting: everything mounted under a folder, deepest first; then kill what still runs in it ----------
mounts_under() {  # mount points strictly below $1, deepest first
  awk -v p="$1/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r
}
kill_procs_in() {  # processes whose root is $1 (left over from a chroot this script started)
  local pids=() p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$1" ] && pids+=("${p#/proc/}")
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  echo "clean_root_check: stopping processes still running in $1: ${pids[*]}" >&2
  kill -TERM "${pids[@]}" 2>/dev/null || true
  sleep 2
  kill -KILL "${pids[@]}" 2>/dev/null || true
}
unmount_all() {  # unmount_all DIR: returns non-zero if something is still mounted below DIR
  local m
  kill_procs_in "$1"
  for m in $(mounts_under "$1"); do
    umount "$m" 2>/dev/null || umount -l "$m" || true
  done
  [ -z "$(mounts_under "$1")" ]
}
remove_tree() {  # rm -rf a root, but never across a mount (bind-mounted /dev or data must stay untouched)
  if unmount_all "$1"; then
    rm -rf --one-file-system "$1"
  else
    echo "clean_root_check: something is still mounted below $1; not deleting it:" >&2
    mounts_under "$1" >&2
  fi
}

current_root=""    # the root to unmount (and maybe delete) on exit
delete_root_on_exit=0
bootstrap_tmp=""
step_pid=""        # the timeout(1) process of the command running in the root
on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$step_pid" ]; then kill -TERM "$step_pid" 2>/dev/null || true; fi
  if [ "$rc" -eq 130 ] || [ "$rc" -eq 143 ]; then
    echo "clean_root_check: interrupted${current_root:+; the root stays at $current_root}" >&2
  fi
  if [ -n "$bootstrap_tmp" ] && [ -d "$bootstrap_tmp" ]; then remove_tree "$bootstrap_tmp"; fi
  if [ -n "$current_root" ] && [ -d "$current_root" ]; then
    if ! unmount_all "$current_root"; then
      echo "clean_root_check: could not unmount everything below $current_root" >&2
      mounts_under "$current_root" >&2
      [ "$rc" -ne 0 ] || rc=2
    elif [ "$delete_root_on_exit" -eq 1 ]; then
      rm -rf --one-file-system "$current_root"
    fi
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- 1. the base: debootstrap once, cached as a tarball ---------------------------------------------------
if [ "$rebootstrap" -eq 1 ]; then rm -f "$tarball" "$tarball.info"; fi
if [ ! -f "$tarball" ]; then
  echo "clean_root_check: bootstrapping Debian $suite minbase ($arch) from $DEBIAN_MIRROR into $tarball"
  if ! command -v debootstrap >/dev/null 2>&1; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap
  fi
  bootstrap_tmp=$(mktemp -d "$cache/bootstrap.XXXXXX")
  t0=$SECONDS
  if ! debootstrap --variant=minbase "$suite" "$bootstrap_tmp/root" "$DEBIAN_MIRROR" \
      >"$cache/debootstrap.log" 2>&1; then
    tail -n 30 "$cache/debootstrap.log" >&2
    die "debootstrap failed (log: $cache/debootstrap.log)"
  fi
  unmount_all "$bootstrap_tmp/root" || die "debootstrap left mounts below $bootstrap_tmp/root"
  # A fresh machine has no downloaded packages and, usually, no package lists: install.sh must fetch them.
  rm -rf "$bootstrap_tmp"/root/var/cache/apt/archives/*.deb "$bootstrap_tmp"/root/var/lib/apt/lists/*
  mkdir -p "$bootstrap_tmp/root/var/lib/apt/lists/partial"
  tar --numeric-owner --xattrs --xattrs-include='*' -C "$bootstrap_tmp/root" -czpf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  { echo "suite=$suite variant=minbase arch=$arch mirror=$DEBIAN_MIRROR date=$(date -u +%FT%TZ)"
    echo "debootstrap $(dpkg-query -W -f='${Version}' debootstrap 2>/dev/null || echo '?')"; } >"$tarball.info"
  remove_tree "$bootstrap_tmp"
  bootstrap_tmp=""
  echo "clean_root_check: bootstrapped in $((SECONDS - t0)) s"
fi

# ---- 2. a pristine copy of the base ------------------------------------------------------------------------
run_dir=$(mktemp -d "$work/$(date +%Y%m%d-%H%M%S).XXXX")
root=$run_dir/root
mkdir "$root"
current_root=$root
tar --numeric-owner --xattrs --xattrs-include='*' -C "$root" -xzpf "$tarball"
echo "clean_root_check: root $root (from $tarball)"

# Network and apt: the resolver and the Debian sources of this machine (main archive and security).
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
rm -f "$root/etc/apt/sources.list"
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/debian.sources"
else
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $DEBIAN_MIRROR
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
fi

# CA certificates: the locally added ones where ca-certificates' update-ca-certificates finds them, and (unless
# --bare-ca) the machine's bundle and the variables that point at it, so HTTPS works behind this machine's proxy.
if [ -d /usr/local/share/ca-certificates ]; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp -rL /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
fi
run_env=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8)
if [ "$bare_ca" -eq 0 ]; then
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$root/etc/ssl/certs"
    cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  fi
  for name in $(compgen -e); do
    [[ $name =~ CERT|_CA_|CA_BUNDLE|CAINFO|SSL_ROOTS ]] || [[ ${name^^} =~ CERT|_CA_|CA_BUNDLE|CAINFO|SSL_ROOTS ]] \
      || continue
    value=${!name}
    [[ $value != *$'\n'* ]] || continue
    run_env+=("$name=$value")
    # A variable naming a file or folder absent from the root: copy it in.
    if [[ $value == /* ]] && [ -e "$value" ] && [ ! -e "$root$value" ]; then
      mkdir -p "$root$(dirname "$value")"
      cp -rL "$value" "$root$value"
    fi
  done
fi
for name in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
  [ -z "${!name:-}" ] || run_env+=("$name=${!name}")
done

# The repository: a clone of the committed HEAD (or --rev) at /src/main, the data folder at /src/shared.
mkdir -p "$root/src"
git clone -q --no-hardlinks "$repo" "$root/src/main"
if [ -n "$rev" ]; then git -C "$root/src/main" checkout -q "$rev"; fi
commit=$(git -C "$root/src/main" rev-parse HEAD)
echo "clean_root_check: /src/main = $repo at $(git -C "$root/src/main" log -1 --format='%h %s')"

# Mounts (each bind made a slave, so nothing mounted inside the root shows up on this machine).
mount -t proc proc "$root/proc"
mount --bind /sys "$root/sys"; mount --make-rslave "$root/sys"; mount -o remount,bind,ro "$root/sys"
mount --bind /dev "$root/dev"; mount --make-rslave "$root/dev"
mkdir -p "$root/dev/pts"
mount --bind /dev/pts "$root/dev/pts"; mount --make-rslave "$root/dev/pts"
if [ -n "$shared" ]; then
  mkdir -p "$root/src/shared"
  mount --bind "$shared" "$root/src/shared"; mount --make-rslave "$root/src/shared"
  mount -o remount,bind,ro "$root/src/shared"
  echo "clean_root_check: /src/shared = $shared (read-only)"
else
  echo "clean_root_check: /src/shared is absent: tests that need it must skip"
fi

chroot "$root" dpkg-query -W -f='${Package}\n' | LC_ALL=C sort >"$run_dir/packages-before.txt"

# ---- 3. the two commands -------------------------------------------------------------------------------------
steps=(demo test)
[ -z "$only" ] || steps=("$only")
declare -A status seconds
fmt_time() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
for step in "${steps[@]}"; do
  log=$run_dir/$step.log
  echo "clean_root_check: running 'cd /src/main && bash scripts/$step.sh' in the root (log: $log)"
  t0=$SECONDS
  cmd=(timeout --kill-after=60 "$step_timeout" chroot "$root" /usr/bin/env -i "${run_env[@]}"
       /bin/bash -c "cd /src/main && exec bash scripts/$step.sh")
  # In the background, so that Ctrl-C or a TERM reaches this script's traps at once (timeout(1) puts the
  # command in its own process group; the exit trap stops it and whatever still runs in the root).
  "${cmd[@]}" </dev/null >"$log" 2>&1 &
  step_pid=$!
  tail_pid=""
  if [ "$verbose" -eq 1 ]; then tail -n +1 -f --pid="$step_pid" "$log" & tail_pid=$!; fi
  set +e
  wait "$step_pid"
  rc=$?
  set -e
  step_pid=""
  if [ -n "$tail_pid" ]; then wait "$tail_pid" || true; fi
  seconds[$step]=$((SECONDS - t0))
  if [ "$rc" -eq 0 ]; then status[$step]=pass
  elif [ "$rc" -eq 124 ]; then status[$step]="FAIL (timed out after $step_timeout)"
  else status[$step]="FAIL (exit $rc)"
  fi
  echo "clean_root_check: $step.sh: ${status[$step]} in $(fmt_time "${seconds[$step]}")"
  kill_procs_in "$root"
done

chroot "$root" dpkg-query -W -f='${Package}\n' | LC_ALL=C sort >"$run_dir/packages-after.txt"
LC_ALL=C comm -13 "$run_dir/packages-before.txt" "$run_dir/packages-after.txt" >"$run_dir/packages-installed.txt"

# ---- 4. summary ----------------------------------------------------------------------------------------------
failed=0
echo
echo "==== clean root check: $repo @ ${commit:0:12} on Debian $suite minbase ($arch)"
echo "     /src/shared: ${shared:-absent}; CA: $([ "$bare_ca" -eq 1 ] && echo 'bare (--bare-ca)' || echo "machine's bundle and variables")"
echo "     packages installed by the scripts: $(wc -l <"$run_dir/packages-installed.txt") (list: $run_dir/packages-installed.txt)"
for step in "${steps[@]}"; do
  log=$run_dir/$step.log
  echo "---- scripts/$step.sh: ${status[$step]}, $(fmt_time "${seconds[$step]}"), log $log"
  if [ "${status[$step]}" = pass ]; then
    case $step in
      demo) grep -E '^(reuse on:|outputs identical)' "$log" | sed 's/^/     /' || true
            if ! grep -q '^outputs identical with reuse on and off: yes' "$log"; then
              echo "     WARNING: demo.sh passed but did not report identical outputs with reuse on and off"
            fi ;;
      test) grep -E 'tests passed|tests failed' "$log" | tail -n 1 | sed 's/^/     /' || true ;;
    esac
  else
    failed=1
    grep -E 'CMake Error|Could NOT find|error:|^E: |npm ERR|FAILED:|^[[:space:]]+[0-9]+ - .*\((Failed|Timeout|SEGFAULT|Subprocess|Exception|Not Run)' \
      "$log" | head -n 20 | sed 's/^/     | /' || true
    echo "     last lines:"
    tail -n 25 "$log" | sed 's/^/     > /'
  fi
  if [ "$step" = test ] && grep -q 'tests passed' "$log"; then
    echo "     tests skipped (e.g. for want of /src/shared): $(grep -c '\*\*\*Skipped' "$log" || true)"
  fi
done

if [ "$failed" -eq 0 ] && [ "$keep_root" -eq 0 ]; then delete_root_on_exit=1; fi
if [ "$delete_root_on_exit" -eq 0 ]; then
  echo "==== root kept at $root (delete it with: rm -rf --one-file-system $run_dir/root)"
fi
echo "==== result: $([ "$failed" -eq 0 ] && echo PASS || echo FAIL)"
exit "$failed"
