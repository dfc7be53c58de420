"""Retention scenarios (issue 15): dropping the full of a chain whose only
incremental holds a 1% change (`prune --keep-last 1` folds the incremental
into the full, in place), against the full backup itself and against
`qemu-img commit` of the same incremental into a copy of the full.

Registered by bench/run.py; `h` is that module (Command, Scenario, Ratio,
cached inputs). Every timed run starts from the same two-image repository
(an untimed copy made before the run).
"""

import json
import shutil
import sys

import backup_scenarios


def prepared_repo(h, ctx):
    """A repository holding a full backup of the 2 GiB disk (60% data) and
    one incremental after 1% of its clusters changed; built once."""
    raw, size = backup_scenarios.data_raw(h, ctx)

    def make(out):
        if out.exists():
            shutil.rmtree(out)
        changed = ctx.work / "prune-changed.raw"
        if changed.exists():
            changed.unlink()
        backup_scenarios.changed_copy(h, ctx, raw, size, changed)
        for src, kind in ((raw, "full"), (changed, "incremental")):
            h.run_quiet([ctx.backchain, "--repo", out, "backup", "--vm", "vm", "--disk", src, "--type", kind])
        changed.unlink()

    return h.cached(ctx, "prune-repo", make), raw, size


def prune_merge(h, ctx):
    """prune --keep-last 1 (fold of a 1% incremental into the full) vs the
    full backup, and vs qemu-img commit of that incremental."""
    pristine, raw, size = prepared_repo(h, ctx)
    repo = ctx.work / "prune-run"
    full_repo = ctx.work / "prune-full-repo"
    chain = json.loads(h.run_quiet([ctx.backchain, "--repo", pristine, "chain", "vm", "--json"]))
    full_img, inc_img = (pristine / i["image_path"] for i in chain[0]["images"])
    commit_dir = ctx.work / "prune-commit"
    commit_script = ctx.work / "prune-commit-prepare.sh"
    # The incremental names its full by file name: copied side by side,
    # the copy commits into the copy of the full.
    commit_script.write_text(
        f'rm -rf "{commit_dir}" && mkdir -p "{commit_dir}" && '
        f'cp --sparse=always "{full_img}" "{inc_img}" "{commit_dir}/"\n'
    )
    copy_script = ctx.work / "prune-prepare.sh"
    copy_script.write_text(f'rm -rf "{repo}" && cp -a --sparse=always "{pristine}" "{repo}"\n')

    def extra(med, commands):
        out = json.loads(
            h.run_quiet([ctx.backchain, "--repo", repo, "list", "--vm", "vm", "--json"])
        )
        ok = len(out) == 1
        return [("points left after the prune", str(len(out)), "1", "yes" if ok else "NO")]

    return h.Scenario(
        name="prune-merge",
        description=f"prune --keep-last 1 of a {h.human(size)} disk (60% random data): a full and one incremental "
        "of 1% changed clusters, the incremental folded into the full in place; against the full backup of "
        "the same disk, and qemu-img commit of the same incremental into a copy of the full",
        commands={
            "backchain prune": h.Command(
                [ctx.backchain, "--repo", repo, "prune", "--vm", "vm", "--keep-last", "1"],
                before=["sh", copy_script],
            ),
            "backchain full backup": h.Command(
                [ctx.backchain, "--repo", full_repo, "backup", "--vm", "vm", "--disk", raw, "--type", "full"],
                full_repo,
            ),
            "qemu-img commit": h.Command(
                ["qemu-img", "commit", "-q", "-d", commit_dir / inc_img.name],
                before=["sh", commit_script],
            ),
        },
        ratios=[
            # prune time <= 0.1 x full backup time
            h.Ratio("full backup / prune", "backchain prune", "backchain full backup", 10.0),
            h.Ratio("qemu-img commit / prune", "backchain prune", "qemu-img commit", 1.0),
        ],
        notes=[
            "The repository is copied from a prepared one before every prune run (untimed), so every run "
            "folds the same incremental.",
            "qemu-img commit -d leaves the top image as it is, as the prune leaves nothing to empty.",
        ],
        extra=extra,
    )


def scenarios(h):
    return {"prune-merge": backup_scenarios.bind(h, prune_merge)}


if __name__ == "__main__":
    sys.exit("run bench/run.py --only prune-merge")
