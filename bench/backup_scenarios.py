"""Backup scenarios (issue 3): full backup vs qemu-img convert, and an
incremental after a 1% change vs one sequential read of the source.

Registered by bench/run.py; `h` is that module (Command, Scenario, Ratio,
cached inputs).
"""

import functools
import json
import os
import shutil
import subprocess
import sys

CHANGE_FRACTION = 0.01


def data_raw(h, ctx):
    # The same input as write-qcow2: 2 GiB, 60% of the clusters random data.
    size = ctx.size(2 * h.GIB, 256 * h.MIB)
    return h.cached(ctx, "data.raw", lambda out: h.sparse_random_raw(ctx, out, size, 0.6)), size


def backup_full(h, ctx):
    """backchain backup (full) vs qemu-img convert -O qcow2, 2 GiB raw, 60% data."""
    raw, size = data_raw(h, ctx)
    repo = ctx.work / "full-repo"
    out_q = ctx.work / "full-q.qcow2"
    return h.Scenario(
        name="backup-full",
        description=f"full backup of a {h.human(size)} raw disk (60% random data) into an empty repository, "
        "against qemu-img writing the same disk as QCOW2; both write to tmpfs",
        commands={
            "backchain backup": h.Command(
                [ctx.backchain, "--repo", repo, "backup", "--vm", "vm", "--disk", raw, "--type", "full"], repo
            ),
            "qemu-img convert": h.Command(["qemu-img", "convert", "-O", "qcow2", raw, out_q], out_q),
        },
        ratios=[h.Ratio("qemu-img convert / backchain backup", "backchain backup", "qemu-img convert", 1.2)],
        notes=["The repository folder is removed before every run, so every run is a first, full backup."],
        extra=lambda med, commands: [
            h.cpu_row("CPU time, backchain backup / qemu-img convert", commands["backchain backup"],
                      commands["qemu-img convert"], 1.0),
            h.steadiness_row("backchain backup", commands["backchain backup"]),
            h.steadiness_row("qemu-img convert", commands["qemu-img convert"]),
        ],
        runs=9,
    )


def changed_copy(h, ctx, raw, size, out):
    """A copy of `raw` with 1% of its 64 KiB clusters rewritten with random
    bytes (picked anywhere: holes and data alike). Returns the count."""
    subprocess.run(["cp", "--sparse=always", str(raw), str(out)], check=True)
    clusters = size // h.CLUSTER
    picks = ctx.rng.sample(range(clusters), int(clusters * CHANGE_FRACTION))
    with open(out, "r+b") as f:
        for c in picks:
            f.seek(c * h.CLUSTER)
            f.write(os.urandom(h.CLUSTER))
    return len(picks)


def backup_incremental(h, ctx):
    """backchain backup (incremental after 1% change) vs a sequential read."""
    raw, size = data_raw(h, ctx)
    changed = ctx.work / "data-changed.raw"
    if changed.exists():
        changed.unlink()
    n = changed_copy(h, ctx, raw, size, changed)
    repo = ctx.work / "incr-repo"
    if repo.exists():
        shutil.rmtree(repo)
    h.run_quiet([ctx.backchain, "--repo", repo, "backup", "--vm", "vm", "--disk", raw, "--type", "full"])
    # Every run backs up the other of the two disks: each incremental sees
    # exactly the same 1% of changed clusters (A -> B, B -> A, ...). A state
    # file picks the side; sh adds about a millisecond.
    state = ctx.work / "incr-state"
    if state.exists():
        state.unlink()
    script = ctx.work / "incr.sh"
    script.write_text(
        f'if [ -e "{state}" ]; then rm "{state}"; src="{raw}"; else : > "{state}"; src="{changed}"; fi\n'
        f'exec "{ctx.backchain}" --repo "{repo}" backup --vm vm --disk "$src" --type incremental --json\n'
    )
    # One measured backup up front, for the stored-bytes figure.
    out = json.loads(h.run_quiet(["sh", script]))
    disk = out["disks"][0]
    image = repo / disk["image_path"]
    changed_bytes = n * h.CLUSTER
    file_bytes = image.stat().st_size
    ratio = file_bytes / changed_bytes

    def extra(med, commands):
        return [
            ("changed bytes (1% of the clusters, random 64 KiB regions)", h.human(changed_bytes), "", ""),
            ("incremental image file size", h.human(file_bytes), "", ""),
            ("engine's stored_bytes / changed_bytes", f"{disk['stored_bytes']} / {disk['changed_bytes']}", "", ""),
            ("image file size / changed bytes", f"{ratio:.3f}", "<= 2", "yes" if ratio <= 2 else "NO"),
        ]

    return h.Scenario(
        name="backup-incremental",
        description=f"incremental backup of a {h.human(size)} raw disk (60% random data) after {n} random 64 KiB "
        "clusters (1%) changed, against one sequential read of the source (`cat` to /dev/null)",
        commands={
            "backchain incremental": h.Command(["sh", script]),
            "cat source": h.Command(["cat", raw]),
        },
        # time <= 1.2 x read  <=>  read time / backup time >= 1 / 1.2
        ratios=[h.Ratio("sequential read / incremental backup", "backchain incremental", "cat source", 1 / 1.2)],
        notes=[
            "Runs alternate between the two disks (A -> B, then B -> A), so every timed incremental stores "
            "the same 1% of changed clusters against its parent."
        ],
        extra=extra,
    )


def bind(h, f):
    g = functools.partial(f, h)
    g.__doc__ = f.__doc__
    return g


def scenarios(h):
    return {"backup-full": bind(h, backup_full), "backup-incremental": bind(h, backup_incremental)}


if __name__ == "__main__":
    sys.exit("run bench/run.py --only backup-full (or backup-incremental)")
