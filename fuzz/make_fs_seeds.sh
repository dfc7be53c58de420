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
# btrfs: the smallest image mkfs.btrfs makes (--shrink, 4 KiB nodes, single
# metadata), and extents compressed by the kernel's methods' userspace twins.
mkdir -p corpus/btrfs_open_walk corpus/btrfs_decompress
truncate -s 120M "$work/btrfs.img"
mkfs.btrfs -q -f --rootdir "$src" --shrink -m single -n 4096 "$work/btrfs.img" >/dev/null 2>&1
cp "$work/btrfs.img" corpus/btrfs_open_walk/
head -c 20000 /dev/urandom | base64 > "$work/text"
{ printf '\x00'; python3 -c 'import sys,zlib; sys.stdout.buffer.write(zlib.compress(open(sys.argv[1],"rb").read()))' "$work/text"; } > corpus/btrfs_decompress/zlib
{ printf '\x02'; zstd -q -c "$work/text"; } > corpus/btrfs_decompress/zstd
echo "seeds in fuzz/corpus/"
