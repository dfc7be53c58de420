#!/usr/bin/env bash
# The main job on the embedded defaults: builds backchain (release) and runs
# the HTTP API over the local repository ./backchain-repo (SQLite catalog).
# On an empty repository, --demo first backs up a bundled sample disk (GPT with
# FAT, NTFS and ext4 partitions), full and then incremental, and prints curl
# commands to browse and download its files. Ctrl-C stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
exec target/release/backchain serve --demo "$@"
