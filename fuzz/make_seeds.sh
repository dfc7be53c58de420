#!/bin/sh
# Builds the seed corpus for qcow2_open_read: small images made by qemu-img
# and qemu-io covering v2/v3, small and default cluster sizes, compressed
# clusters (deflate and zstd), zero clusters and extended L2 entries.
set -eu
out="${1:-$(dirname "$0")/corpus/qcow2_open_read}"
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

img() { # name, qemu-img create options
    name=$1; shift
    qemu-img create -q -f qcow2 "$@" "$tmp/$name" 1M
}
io() { # name, qemu-io commands...
    name=$1; shift
    args=""
    for c in "$@"; do args="$args -c \"$c\""; done
    eval qemu-io -f qcow2 $args "$tmp/$name" >/dev/null
}

img v2-512.qcow2 -o compat=0.10,cluster_size=512
io v2-512.qcow2 "write -P 0x11 0 1536" "write -P 0x22 64k 512"

img v3-4k.qcow2 -o cluster_size=4096
io v3-4k.qcow2 "write -P 0x33 0 8k" "write -z 16k 4k" "write -P 0x44 100k 4k"

img v3-64k.qcow2
io v3-64k.qcow2 "write -P 0x55 0 64k" "write -z 64k 64k" "write -P 0x66 512k 4k"

img deflate.qcow2 -o cluster_size=4096
io deflate.qcow2 "write -c -P 0x77 0 4k" "write -c -P 0x78 8k 4k" "write -P 0x79 12k 4k"

img zstd.qcow2 -o cluster_size=4096,compression_type=zstd
io zstd.qcow2 "write -c -P 0x7a 0 4k" "write -c -P 0x7b 4k 4k"

img extl2.qcow2 -o cluster_size=16k,extended_l2=on
io extl2.qcow2 "write -P 0x7c 0 512" "write -z 1k 512" "write -P 0x7d 20k 2k"

img empty.qcow2 -o cluster_size=512

for f in "$tmp"/*.qcow2; do
    cp "$f" "$out/"
done
ls -l "$out"
