"""XFS, btrfs and LVM scenarios (issue 17) and the xattr walk (issue 18).

Registered by bench/run.py; `h` is that module. The inputs are built by
scripts in fixtures/bench/ (as root: loop mounts, losetup, LVM tools):

* `make_fs_volumes.sh`: whole-disk XFS and btrfs volumes holding `big.bin`
  (1 GiB random); the XFS one also holds `many/`, 100,000 empty files that
  each carry a user xattr;
* `make_lvm_disk.sh`: a sparse 100 GiB GPT disk, /boot (ext4) and an LVM2
  PV with `root` (XFS) and `home` (ext4).

Each is backed up with `backchain backup` into one repository per scratch
folder; the raw images are deleted afterwards. --quick divides the sizes by 8.
"""

import json
import statistics
import time
from pathlib import Path

import restore_scenarios as rs

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "bench"

WALK_XATTRS = """
import os, sys
folder, n, with_xattrs = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
seen = values = 0
for e in os.scandir(folder):
    os.lstat(e.path)
    if with_xattrs:
        for name in os.listxattr(e.path, follow_symlinks=False):
            values += len(os.getxattr(e.path, name, follow_symlinks=False)) > 0
    seen += 1
assert seen == n, seen
assert not with_xattrs or values == n, values
"""


def fs_repo(h, ctx):
    """Builds (once per scratch folder) the repository of the XFS, btrfs and LVM backups."""
    info_path = ctx.work / "fs-repo.json"
    if info_path.exists():
        return json.loads(info_path.read_text())
    s = rs.sizes(h, ctx)
    repo = ctx.work / "fs-repo"
    h.run_quiet(["bash", FIXTURES / "make_fs_volumes.sh", ctx.work, s["big"], s["many"]])
    lvm = ctx.work / "lvm100.raw"
    h.run_quiet(["bash", FIXTURES / "make_lvm_disk.sh", lvm])
    ids, virtual = {}, {}
    for vm, img in (("xfs", ctx.work / "xfs.img"), ("btrfs", ctx.work / "btrfs.img"), ("lvm", lvm)):
        out = json.loads(h.run_quiet([ctx.backchain, "--repo", repo, "backup", "--vm", vm, "--disk", img, "--json"]))
        ids[vm] = out["backup_id"]
        virtual[vm] = img.stat().st_size
        img.unlink()
    info = {"repo": str(repo), "ids": ids, "sizes": s, "virtual": virtual}
    info["vol"] = {vm: rs.volume_dir(h, ctx, repo, f"{ids[vm]}:0") for vm in ("xfs", "btrfs")}
    info_path.write_text(json.dumps(info))
    return info


def cat_xfs(h, ctx):
    """backchain cat of a 1 GiB file on XFS vs export of the disk (speed)."""
    return rs.cat_vs_export(h, ctx, "xfs", fs_repo(h, ctx))


def cat_btrfs(h, ctx):
    """backchain cat of a 1 GiB file on btrfs (uncompressed) vs export of the disk (speed)."""
    return rs.cat_vs_export(h, ctx, "btrfs", fs_repo(h, ctx))


def ls_many_xfs(h, ctx):
    """backchain ls of a 100,000-entry XFS folder: time and peak memory."""
    return rs.ls_many(h, ctx, fs_repo(h, ctx), "xfs")


def getfattr_walk(h, ctx):
    """listxattr + getxattr of 100,000 files through FUSE vs the same walk without xattrs."""
    info = fs_repo(h, ctx)
    target, mnt, folder, n, walk_py = rs.many_walk(ctx, info, "xfs", "xattr-walk", WALK_XATTRS)

    def walk(with_xattrs):
        return rs.fresh_mount_run(ctx, info, target, mnt, walk_py, f"{mnt}{folder}", n, with_xattrs)

    return h.Scenario(
        name="getfattr-walk",
        description=f"an XFS folder of {n:,} files, each with one user xattr, through a fresh FUSE mount: "
        "python os.scandir + lstat of every entry, with and without listxattr + getxattr of every attribute "
        "(a `find -exec getfattr -d` walk without the process per file)",
        commands={
            "walk with xattrs": h.Command(["sh", "-c", walk(1)]),
            "walk without xattrs": h.Command(["sh", "-c", walk(0)]),
        },
        ratios=[h.Ratio("plain walk time / xattr walk time", "walk with xattrs", "walk without xattrs", 1 / 1.5)],
        notes=["Target: the xattr walk takes at most 1.5x the plain walk (ratio >= 0.67). Mount and umount are "
               "inside both timings."],
    )


def session_open_lvm(h, ctx):
    """time to open an HTTP restore session over a 100 GiB LVM disk and list the root LV's root."""
    info = fs_repo(h, ctx)
    runs = 3 if ctx.quick else 7
    backup = info["ids"]["lvm"]

    def listing(srv, mid, path):
        url = f"{srv.base}/restore/{mid}/files?path={rs.quote(path)}"
        return json.loads(rs.urllib.request.urlopen(url).read())["entries"]

    def extra(med, commands):
        totals, opens = [], []
        for _ in range(runs):
            srv = rs.Server(ctx, info)  # fresh: nothing of the backup cached in the process
            try:
                t = time.perf_counter()
                mid = srv.session(backup, 0)
                opens.append(time.perf_counter() - t)
                lv = next(e for e in listing(srv, mid, "/") if e["name"].startswith("LV rl-root"))
                files = listing(srv, mid, lv["path"])
                totals.append(time.perf_counter() - t)
                assert len(files) == 20, files
            finally:
                srv.stop()
        return [
            rs.time_goal_row("POST /restore/mount, then list / and the root LV's root", totals, 0.1, "{:.1f}"),
            ("of which POST /restore/mount", f"{statistics.median(opens) * 1000:.1f} ms", "", ""),
        ]

    return h.Scenario(
        name="session-open-lvm",
        description="`POST /restore/mount` over one backup of a 100 GiB GPT disk with /boot (ext4) and an LVM2 PV "
        f"(VG rl: root XFS 20 GiB, home ext4 10 GiB), then the listing of `/` and of the root LV's root, against a "
        f"freshly started `backchain serve`, {runs} runs, median",
        commands={},
        ratios=[],
        extra=extra,
    )


def scenarios(h):
    fs = (cat_xfs, cat_btrfs, ls_many_xfs, getfattr_walk, session_open_lvm)
    return {f.__name__.replace("_", "-"): rs.bind(h, f) for f in fs}
