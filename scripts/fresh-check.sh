#!/usr/bin/env bash
# The README's promise, checked: on a minimal Debian 12 root (debootstrap
# --variant=minbase, the mirror this machine's apt uses), as root, a fresh clone of HEAD
# runs `scripts/demo.sh` and then `scripts/test.sh` exactly as the README says, each
# installing what it needs itself. Prints how long each took; stops at the first error.
#
# Usage: scripts/fresh-check.sh [WORKDIR]   (default /var/tmp/sparq-fresh-check; needs
#        root, about 20-40 minutes on 2 cores and about 6 GB of disk)
# Run it by hand before resolving anything that touches dependencies, scripts or CMake.
# It never runs from CI or scripts/test.sh (it calls test.sh itself).
#
# The only help the root gets from this machine: the local CA certificates the host
# trusts (update-ca-certificates' local directory), because this workplace reaches the
# registries through a TLS-intercepting proxy, and its resolv.conf. A user's fresh
# machine needs neither.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/var/tmp/sparq-fresh-check}
root="$work/root"
suite=bookworm

die() { echo "fresh-check: FAIL: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot, mounts)"
git -C "$here" rev-parse HEAD >/dev/null 2>&1 || die "$here is not a git checkout"

mounted=()
cleanup() {
  local rc=$?
  # Unmount in reverse order, then remove the root without crossing into any mount that
  # is still there (rm --one-file-system), so nothing of the host is ever deleted.
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    umount -l "${mounted[$i]}" 2>/dev/null || echo "fresh-check: could not unmount ${mounted[$i]}" >&2
  done
  if [ -d "$root" ]; then
    if grep -q " $root" /proc/mounts; then
      echo "fresh-check: something is still mounted under $root; leaving it in place" >&2
    else
      rm -rf --one-file-system "$root"
    fi
  fi
  [ $rc -eq 0 ] || echo "fresh-check: FAILED (exit $rc); log in $work/log" >&2
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

secs() { date +%s; }
t0=$(secs)
stamp() { printf 'fresh-check: %-34s %5ds\n' "$1" "$2" | tee -a "$work/times"; }

mkdir -p "$work"
: >"$work/times"
[ -e "$root" ] && rm -rf --one-file-system "$root"

if ! command -v debootstrap >/dev/null 2>&1; then
  echo "fresh-check: installing debootstrap" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >&2 ||
    die "could not install debootstrap"
fi

# The mirror this machine's apt uses (deb822 or one-line sources).
mirror=$(grep -h -m1 -E '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | head -n1)
if [ -z "$mirror" ]; then
  mirror=$(grep -h -m1 -E '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n1)
fi
mirror=${mirror:-http://deb.debian.org/debian}
security=${mirror%/debian}/debian-security

echo "fresh-check: debootstrap --variant=minbase $suite from $mirror into $root" >&2
ts=$(secs)
debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$work/log" 2>&1 ||
  { tail -n 20 "$work/log" >&2; die "debootstrap failed"; }
stamp "debootstrap (minbase)" $(($(secs) - ts))

# A fresh Debian 12's sources: main, updates and security.
rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
# Workplace plumbing only (see the header): a mirror snapshot with expired Release
# files, the proxy's CA certificates, and name resolution.
for f in /etc/apt/apt.conf.d/*; do
  if grep -q 'Check-Valid-Until' "$f" 2>/dev/null; then cp "$f" "$root/etc/apt/apt.conf.d/"; fi
done
mkdir -p "$root/usr/local/share/ca-certificates"
cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
cp /etc/resolv.conf "$root/etc/resolv.conf"

for m in proc sys dev dev/pts; do
  mkdir -p "$root/$m"
  mount --bind "/$m" "$root/$m"
  mounted+=("$root/$m")
done

# A fresh clone of HEAD (committed work only), owned by root as a user's would be.
git clone -q --no-hardlinks "$here" "$root/root/sparq" || die "git clone failed"
git -C "$root/root/sparq" checkout -q "$(git -C "$here" rev-parse HEAD)"
echo "fresh-check: HEAD $(git -C "$here" rev-parse --short HEAD)" | tee -a "$work/times"

in_root() {
  chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 TERM=dumb ${NODE_EXTRA_CA_CERTS:+NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt} \
    /bin/bash -c "$1"
}

# The README's first two commands, as root, from the clone.
ts=$(secs)
rc=0
in_root 'cd /root/sparq && scripts/demo.sh' 2>&1 | tee "$work/demo.log" | sed 's/^/  demo | /' || rc=$?
stamp "scripts/demo.sh" $(($(secs) - ts))
[ "$rc" -eq 0 ] || die "scripts/demo.sh exited $rc (log: $work/demo.log)"
grep -q '^ONNX Runtime dynamic int8 ' "$work/demo.log" ||
  die "the demo's ONNX Runtime rows are missing (log: $work/demo.log)"
grep -q '^ONNX Runtime fp32 ' "$work/demo.log" ||
  die "the demo's ONNX Runtime fp32 row is missing (log: $work/demo.log)"

ts=$(secs)
rc=0
in_root 'cd /root/sparq && scripts/test.sh' 2>&1 | tee "$work/test.log" | sed 's/^/  test | /' || rc=$?
stamp "scripts/test.sh" $(($(secs) - ts))
[ "$rc" -eq 0 ] || die "scripts/test.sh exited $rc (log: $work/test.log)"

stamp "total" $(($(secs) - t0))
echo "fresh-check: PASS" | tee -a "$work/times"
