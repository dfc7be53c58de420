"""Backup scenarios (issue 3): full backup vs qemu-img convert, and an
incremental after a 1% change vs one sequential read of the source. Issue
13: the same disk pulled from qemu-nbd over a unix socket, against
qemu-img convert and nbdcopy from the same export, and an incremental with
a dirty bitmap after 1% of the disk changed.

Registered by bench/run.py; `h` is that module (Command, Scenario, Ratio,
cached inputs).
"""

import atexit
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import time

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
        ratios=[h.Ratio("qemu-img convert / backchain backup", "backchain backup", "qemu-img convert", 1.0)],
        notes=["The repository folder is removed before every run, so every run is a first, full backup."],
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


_PEERS = []


@atexit.register
def _stop_peers():
    for p in _PEERS:
        p.kill()
        p.wait()


def qemu_nbd(ctx, image, fmt, sock, extra=()):
    """qemu-nbd serving `image` read-only on a unix socket until the harness
    exits; -e 4 allows (and advertises) several connections, which
    backchain and nbdcopy use and qemu-img convert does not."""
    if sock.exists():
        sock.unlink()
    argv = ["qemu-nbd", "-r", "-t", "-e", "4", "-f", fmt, "-k", str(sock), *extra, str(image)]
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    _PEERS.append(p)
    t0 = time.monotonic()
    while True:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(sock))
            return f"nbd+unix:///?socket={sock}"
        except OSError:
            if p.poll() is not None or time.monotonic() - t0 > 20:
                sys.exit(f"qemu-nbd did not start: {' '.join(argv)}")
            time.sleep(0.05)


def backup_nbd_full(h, ctx):
    """backchain backup from qemu-nbd vs qemu-img convert and nbdcopy of the same export."""
    raw, size = data_raw(h, ctx)
    uri = qemu_nbd(ctx, raw, "raw", ctx.work / "nbd-full.sock")
    repo = ctx.work / "nbd-full-repo"
    out_q = ctx.work / "nbd-full-q.qcow2"
    out_c = ctx.work / "nbd-full-copy.raw"
    return h.Scenario(
        name="backup-nbd-full",
        description=f"full backup of a {h.human(size)} disk (60% random data) exported by qemu-nbd (-r -e 4) "
        "over a unix socket, against qemu-img convert -O qcow2 and nbdcopy to a file from the same export",
        commands={
            "backchain backup": h.Command(
                [ctx.backchain, "--repo", repo, "backup", "--vm", "vm", "--disk", uri, "--type", "full"], repo
            ),
            "qemu-img convert": h.Command(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", uri, out_q], out_q),
            "nbdcopy": h.Command(["nbdcopy", uri, out_c], out_c, before=["touch", out_c]),
        },
        ratios=[
            h.Ratio("qemu-img convert / backchain backup", "backchain backup", "qemu-img convert", 1.0),
            h.Ratio("nbdcopy (the transport's ceiling) / backchain backup", "backchain backup", "nbdcopy", None),
        ],
        notes=["Both backchain and nbdcopy open several connections (CAN_MULTI_CONN); qemu-img convert one."],
    )


def dirty_bytes(uri, bitmap):
    out = subprocess.run(
        ["nbdinfo", f"--map=qemu:dirty-bitmap:{bitmap}", "--json", uri], check=True, stdout=subprocess.PIPE
    ).stdout
    return sum(e["length"] for e in json.loads(out) if e["type"] & 1)


def backup_nbd_incremental(h, ctx):
    """An incremental with a dirty bitmap after 1% changed, as a fraction of the full backup."""
    raw, size = data_raw(h, ctx)
    img = ctx.work / "nbd-incr.qcow2"
    if not img.exists():
        tmp = ctx.work / "nbd-incr.qcow2.tmp"
        h.run_quiet(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, tmp])
        h.run_quiet(["qemu-img", "bitmap", "--add", "--granularity", "65536", tmp, "b1"])
        # 1% of the disk in writes of 64 KiB to 1 MiB, anywhere.
        cmds, total = [], 0
        while total < size * CHANGE_FRACTION:
            n = ctx.rng.randrange(1, 17) * h.CLUSTER
            at = ctx.rng.randrange(0, (size - n) // h.CLUSTER) * h.CLUSTER
            cmds.append(f"write -P {ctx.rng.randrange(1, 255)} {at} {n}")
            total += n
        h.qemu_io_script(tmp, cmds)
        tmp.rename(img)
    uri = qemu_nbd(ctx, img, "qcow2", ctx.work / "nbd-incr.sock", ["-B", "b1"]) + "&bitmap=b1"
    dirty = dirty_bytes(uri.replace("&bitmap=b1", ""), "b1")
    # The parent: one full backup, copied back before every timed run so
    # each incremental is the first after it.
    parent = ctx.work / "nbd-incr-parent"
    if parent.exists():
        shutil.rmtree(parent)
    backup = [ctx.backchain, "--repo"]
    h.run_quiet([*backup, parent, "backup", "--vm", "vm", "--disk", uri, "--type", "full"])
    repo = ctx.work / "nbd-incr-repo"
    full_repo = ctx.work / "nbd-incr-full"
    restore = ["sh", "-c", f'rm -rf "{repo}" && cp -a "{parent}" "{repo}"']
    subprocess.run(restore, check=True)
    out = json.loads(h.run_quiet([*backup, repo, "backup", "--vm", "vm", "--disk", uri, "--json"]))
    wire = out["bytes_read"]

    def extra(med, commands):
        r = wire / dirty if dirty else 0
        return [
            ("dirty bytes (the bitmap, per nbdinfo)", h.human(dirty), "", ""),
            ("bytes read over the wire / dirty bytes", f"{r:.3f}", "<= 1.1", "yes" if r <= 1.1 else "NO"),
            ("incremental stored_bytes", h.human(out["disks"][0]["stored_bytes"]), "", ""),
        ]

    return h.Scenario(
        name="backup-nbd-incremental",
        description=f"incremental backup with a dirty bitmap of a {h.human(size)} QCOW2 (60% data) exported by "
        "qemu-nbd -B, after 1% of it was rewritten in 64 KiB-1 MiB writes, against a full backup of the same export",
        commands={
            "backchain full": h.Command(
                [*backup, full_repo, "backup", "--vm", "vm", "--disk", uri, "--type", "full"], full_repo
            ),
            "backchain incremental": h.Command(
                [*backup, repo, "backup", "--vm", "vm", "--disk", uri, "--type", "incremental"], before=restore
            ),
        },
        # incremental <= 0.1 x full  <=>  full / incremental >= 10
        ratios=[h.Ratio("full / incremental (bitmap)", "backchain incremental", "backchain full", 10.0)],
        notes=["The repository holding the parent full backup is copied back (untimed) before every incremental."],
        extra=extra,
    )


def bind(h, f):
    g = functools.partial(f, h)
    g.__doc__ = f.__doc__
    return g


def scenarios(h):
    return {
        "backup-full": bind(h, backup_full),
        "backup-incremental": bind(h, backup_incremental),
        "backup-nbd-full": bind(h, backup_nbd_full),
        "backup-nbd-incremental": bind(h, backup_nbd_incremental),
    }


if __name__ == "__main__":
    sys.exit("run bench/run.py --only backup-full (or backup-incremental)")
