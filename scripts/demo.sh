#!/usr/bin/env bash
# The main job on the embedded defaults: builds backchain (release), makes a
# small sample disk, and shows it as an image and its flattened export.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
BC=target/release/backchain
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A 64 MiB sample disk with some data.
head -c 16M /dev/urandom > "$work/data"
truncate -s 64M "$work/disk.raw"
dd if="$work/data" of="$work/disk.raw" bs=1M seek=8 conv=notrunc status=none
$BC export "$work/disk.raw" --format qcow2 -o "$work/disk.qcow2"
$BC info "$work/disk.qcow2"
$BC export "$work/disk.qcow2" --format raw -o "$work/back.raw"
cmp "$work/disk.raw" "$work/back.raw" && echo "demo: round trip through QCOW2 is byte-identical"
