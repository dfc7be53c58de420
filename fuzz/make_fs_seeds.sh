#!/usr/bin/env bash
# Seed corpora for the partition-table and filesystem fuzz targets: small
# images made with the real tools (mkfs.ext4 -d, mkntfs, mkfs.fat + mtools,
# sgdisk) plus the committed tiny disks of fixtures/small. libFuzzer mutates
# them from there.
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p corpus/partition_table corpus/ext4_open_walk corpus/ntfs_open_walk corpus/fat_open_walk corpus/xfs_open_walk
for z in ../fixtures/small/*.img.zst; do
  zstd -dqf "$z" -o "$work/$(basename "$z" .zst)"
done
cp "$work/gpt-tiny.img" "$work/mbr-logical.img" corpus/partition_table/
cp "$work/fat12.img" corpus/fat_open_walk/
# A small tree: a few files, a folder, a symlink, a long name.
src="$work/src"; mkdir -p "$src/dir/sub"
echo hello > "$src/a.txt"; head -c 5000 /dev/urandom > "$src/dir/b.bin"
echo deep > "$src/dir/sub/c.txt"; ln -s ../a.txt "$src/dir/link"
echo long > "$src/a-rather-long-file-name-for-lfn-entries.txt"
truncate -s 256K "$work/ext4.img"; mkfs.ext4 -q -F -b 1024 -N 32 -d "$src" "$work/ext4.img" 2>/dev/null
cp "$work/ext4.img" corpus/ext4_open_walk/
truncate -s 256K "$work/ext2.img"; mkfs.ext2 -q -F -b 1024 -N 32 -d "$src" "$work/ext2.img"
cp "$work/ext2.img" corpus/ext4_open_walk/
truncate -s 2M "$work/ntfs.img"; mkntfs -q -F -Q -s 512 -c 512 "$work/ntfs.img" >/dev/null 2>&1
cp "$work/ntfs.img" corpus/ntfs_open_walk/
truncate -s 200K "$work/fat.img"; mkfs.fat -F 12 -n SEED "$work/fat.img" >/dev/null
MTOOLS_SKIP_CHECK=1 mcopy -s -i "$work/fat.img" "$src/a.txt" "$src/a-rather-long-file-name-for-lfn-entries.txt" ::/
cp "$work/fat.img" corpus/fat_open_walk/
# XFS: v5 and v4 from a protofile of the same tree (16 MiB is XFS's
# smallest allocation group; the variables let mkfs.xfs go under 300 MB).
cat > "$work/proto" <<PROTO
/dev/null
0 0
d--755 0 0
a.txt ---644 0 0 $src/a.txt
dir d--755 1000 1000
 b.bin ---600 1000 1000 $src/dir/b.bin
 link l--777 0 0 ../a.txt
 $
$
PROTO
for crc in 1 0; do
  truncate -s 16M "$work/xfs$crc.img"
  TEST_DIR=/tmp TEST_DEV=seed QA_CHECK_FS=1 mkfs.xfs -q -f -m crc=$crc -p "$work/proto" "$work/xfs$crc.img" 2>/dev/null
  cp "$work/xfs$crc.img" corpus/xfs_open_walk/
done
# XFS v5 with attribute forks in short-form, leaf and node form and a
# remote value, written by the kernel through a loop mount.
truncate -s 16M "$work/xfsattr.img"
TEST_DIR=/tmp TEST_DEV=seed QA_CHECK_FS=1 mkfs.xfs -q -f "$work/xfsattr.img" 2>/dev/null
mkdir -p "$work/mnt"
mount -o loop "$work/xfsattr.img" "$work/mnt"
python3 - "$work/mnt" <<'PY' || { umount "$work/mnt"; exit 1; }
import os, sys
m = sys.argv[1]
for name, n, size in (("sf", 2, 8), ("leaf", 20, 60), ("node", 200, 100), ("remote", 1, 9000)):
    p = os.path.join(m, name)
    open(p, "w").write(name)
    for i in range(n):
        os.setxattr(p, f"user.{name}{i:03}", bytes([i % 251]) * size)
os.setxattr(os.path.join(m, "sf"), "trusted.t", b"1")
os.setxattr(os.path.join(m, "sf"), "security.selinux", b"system_u:object_r:bin_t:s0")
PY
setfacl -m u:1000:r "$work/mnt/leaf"
umount "$work/mnt"
cp "$work/xfsattr.img" corpus/xfs_open_walk/
# btrfs: the smallest image mkfs.btrfs makes (--shrink, 4 KiB nodes, single
# metadata), and extents compressed by the kernel's methods' userspace twins.
mkdir -p corpus/btrfs_open_walk corpus/btrfs_decompress
truncate -s 120M "$work/btrfs.img"
mkfs.btrfs -q -f --rootdir "$src" --shrink -m single -n 4096 "$work/btrfs.img" >/dev/null 2>&1
cp "$work/btrfs.img" corpus/btrfs_open_walk/
head -c 20000 /dev/urandom | base64 > "$work/text"
{ printf '\x00'; python3 -c 'import sys,zlib; sys.stdout.buffer.write(zlib.compress(open(sys.argv[1],"rb").read()))' "$work/text"; } > corpus/btrfs_decompress/zlib
{ printf '\x02'; zstd -q -c "$work/text"; } > corpus/btrfs_decompress/zstd
# LVM2: a 4 MiB PV (on a loop device, with a private LVM config; no
# device-mapper: lvcreate writes metadata only) holding a linear and a
# two-segment LV, and its metadata text as vgcfgbackup writes it.
mkdir -p corpus/lvm_pv corpus/lvm_metadata
truncate -s 4M "$work/pv.img"
pv=$(losetup -f --show "$work/pv.img")
lvm_() {
  LVM_SYSTEM_DIR="$work" LVM_SUPPRESS_FD_WARNINGS=1 "$@" --config "devices { filter = [ \"a|^$pv\$|\", \"r|.*|\" ] \
use_devicesfile = 0 obtain_device_list_from_udev = 0 } activation { udev_sync = 0 udev_rules = 0 } \
backup { backup = 0 archive = 0 }" >/dev/null 2>&1
}
lvm_ pvcreate -q "$pv" && lvm_ vgcreate -q -s 64k seedvg "$pv" \
  && lvm_ lvcreate --driverloaded n -an --zero n -q -L 256k -n one seedvg \
  && lvm_ lvcreate --driverloaded n -an --zero n -q -L 128k -n two seedvg \
  && lvm_ lvextend --driverloaded n -q -L 384k seedvg/one \
  && lvm_ vgcfgbackup -f "$work/seedvg.txt" seedvg
status=$?
losetup -d "$pv"
[ $status -eq 0 ]
cp "$work/pv.img" corpus/lvm_pv/
cp "$work/seedvg.txt" corpus/lvm_metadata/
echo "seeds in fuzz/corpus/"
