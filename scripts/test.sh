#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine: installs the test oracles
# (qemu-img and friends) when missing, checks formatting and lints, then runs
# every test of the workspace. Tests never skip for a missing tool: they fail.
set -euo pipefail
cd "$(dirname "$0")/.."

# tool:package pairs the tests use as oracles or fixture builders.
TOOLS="qemu-img:qemu-utils qemu-io:qemu-utils mkfs.ext4:e2fsprogs debugfs:e2fsprogs mkntfs:ntfs-3g \
ntfs-3g:ntfs-3g mkfs.fat:dosfstools mcopy:mtools sgdisk:gdisk fusermount3:fuse3 unzip:unzip zstd:zstd \
sfdisk:fdisk setfattr:attr getfattr:attr python3:python3 ntfsinfo:ntfs-3g \
blkid:util-linux mkswap:util-linux setpriv:util-linux flock:util-linux losetup:mount mount:mount tar:tar \
qemu-nbd:qemu-utils qemu-storage-daemon:qemu-system-common nbdkit:nbdkit nbdinfo:libnbd-bin nbdcopy:libnbd-bin \
pvcreate:lvm2 mkfs.xfs:xfsprogs xfs_db:xfsprogs mkfs.btrfs:btrfs-progs systemd-analyze:systemd \
setfacl:acl getfacl:acl setcap:libcap2-bin sqlite3:sqlite3 curl:curl openssl:openssl"
missing=()
for pair in $TOOLS; do
  tool=${pair%%:*} pkg=${pair##*:}
  if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ] && [ ! -x "/sbin/$tool" ]; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  echo "test.sh: installing missing test tools: $pkgs"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $pkgs >/dev/null
fi
export PATH="$PATH:/usr/sbin:/sbin"

cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace "$@"
