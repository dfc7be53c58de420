#!/usr/bin/env python3
"""backchain benchmark harness.

Builds backchain in release mode, generates each scenario's inputs in a
scratch folder (default: a fresh folder under /dev/shm, so both tools read
the same warm, in-memory files and write to memory: the numbers compare the
programs, not the disk), then runs backchain and the peer tool side by side,
alternating, several times, and reports medians and ratios.

    bench/run.py                      all scenarios, full sizes
    bench/run.py --quick              smaller inputs, fewer runs
    bench/run.py --only export-raw    one scenario (repeatable)
    bench/run.py --list               scenario names

The table (with machine information) is written to docs/benchmarks.md unless
--no-write is given. A ratio is peer time / backchain time (or, for ratios
between two backchain runs, the reference time / the measured time), so
higher is better and 1.0 means "as fast".

Adding a scenario: write a function `setup(ctx) -> Scenario` and register it
in SCENARIOS. A Scenario names its commands and the ratios to report.
"""

import argparse
import atexit
import json
import signal
import socket
import urllib.parse
import urllib.request
import datetime
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = 64 << 10
NOTES = "<!-- notes: kept by bench/run.py -->"
MIB = 1 << 20
GIB = 1 << 30


@dataclass
class Command:
    """One timed command. `output` is removed before every run."""

    argv: list
    output: Path | None = None  # a file, or a folder (removed as a whole)
    # Measure peak memory: run under GNU time, whose child starts small (the
    # ru_maxrss of a child forked from this Python process counts Python's
    # own pages). peak_kib is the largest over all runs.
    memory: bool = False
    peak_kib: int = 0
    # Run, untimed, before every run (e.g. to drop a page cache).
    before: list | None = None
    # A long-lived server doing this command's work in another process (a
    # FUSE or HTTP server): its PID, or a callable giving it. Its CPU time
    # (utime + stime from /proc/PID/stat) is read around every run.
    server: object = None
    # Bytes the command moves, for CPU per GiB.
    bytes: int | None = None
    # Filled in by run_scenario: every run's wall, CPU and server CPU time.
    walls: list = field(default_factory=list)
    cpus: list = field(default_factory=list)
    server_cpus: list = field(default_factory=list)

    def server_pid(self):
        return self.server() if callable(self.server) else self.server

    def median_cpu(self):
        return statistics.median(self.cpus)

    def median_server_cpu(self):
        return statistics.median(self.server_cpus) if self.server_cpus else None

    def per_gib(self, seconds):
        return seconds / (self.bytes / GIB)


@dataclass
class Ratio:
    """time[reference] / time[measured]; `target` is the issue's goal."""

    name: str
    measured: str
    reference: str
    target: float | None  # None: shown for comparison, no goal
    # Multiplies the time ratio: reference bytes / measured bytes when the
    # two commands move different amounts of data (a speed ratio).
    scale: float = 1.0


@dataclass
class Scenario:
    name: str
    description: str
    commands: dict  # label -> Command, run in this order every round
    ratios: list
    notes: list = field(default_factory=list)
    # Called after the timed runs with (medians, commands); returns rows
    # (measurement, value, goal, met) for the "other measurements" table.
    extra: object = None
    rows: list = field(default_factory=list)
    # Timed runs per command when the scenario needs more than --runs (for
    # steadiness figures); never fewer than --runs.
    runs: int | None = None


@dataclass
class Context:
    work: Path
    backchain: Path
    quick: bool
    rng: random.Random

    def size(self, full, quick):
        return quick if self.quick else full


def run_quiet(argv, **kw):
    r = subprocess.run([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"command failed: {' '.join(map(str, argv))}\n{r.stderr}{r.stdout}")
    return r.stdout


# ---------------------------------------------------------------- rows


def steadiness_row(label, cmd, limit=1.5):
    """An "other measurements" row: the slowest run over the median run."""
    med = statistics.median(cmd.walls)
    r = max(cmd.walls) / med
    return (f"{label}: slowest / median wall time", f"{r:.2f} ({max(cmd.walls):.3f} / {med:.3f} s)",
            f"<= {limit}", "yes" if r <= limit else "NO")


def cpu_row(name, measured, reference, limit, server=False):
    """An "other measurements" row: median CPU time of `measured` over
    `reference` (their servers' CPU with `server`), per GiB when both know
    how many bytes they move."""
    def per(cmd):
        c = cmd.median_server_cpu() if server else cmd.median_cpu()
        return cmd.per_gib(c) if cmd.bytes else c

    m, ref = per(measured), per(reference)
    r = m / max(ref, 1e-6)
    unit = " per GiB" if measured.bytes and reference.bytes else ""
    value = f"{r:.2f} ({m:.3f} / {ref:.3f} s{unit})"
    if limit is None:
        return (name, value, "", "")
    return (name, value, f"<= {limit}", "yes" if r <= limit else "NO")


# ---------------------------------------------------------------- inputs


def sparse_random_raw(ctx, path, size, data_fraction):
    """A raw file where `data_fraction` of the 64 KiB clusters hold random
    bytes and the rest are holes. Returns the data cluster indexes."""
    clusters = size // CLUSTER
    data = sorted(ctx.rng.sample(range(clusters), int(clusters * data_fraction)))
    with open(path, "wb") as f:
        f.truncate(size)
        # Write consecutive data clusters together: far fewer syscalls.
        i = 0
        while i < len(data):
            j = i
            while j + 1 < len(data) and data[j + 1] == data[j] + 1 and j - i < 255:
                j += 1
            f.seek(data[i] * CLUSTER)
            f.write(os.urandom((j - i + 1) * CLUSTER))
            i = j + 1
    return data


def qemu_io_script(image, cmds):
    """Runs qemu-io commands (one per line on stdin) against a QCOW2 image."""
    r = subprocess.run(
        ["qemu-io", "-f", "qcow2", str(image)],
        input="\n".join(cmds) + "\n",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if r.returncode != 0 or "error" in r.stdout.lower():
        sys.exit(f"qemu-io failed on {image}: {r.stderr}{r.stdout[-2000:]}")


def cached(ctx, name, make):
    """Builds an input once per work folder (scenarios may share inputs)."""
    p = ctx.work / name
    if not p.exists():
        tmp = ctx.work / (name + ".tmp")
        make(tmp)
        tmp.rename(p)
    return p


def base_qcow2(ctx):
    size = ctx.size(1 * GIB, 128 * MIB)

    def make(out):
        raw = ctx.work / "base.raw.tmp"
        sparse_random_raw(ctx, raw, size, 0.6)
        run_quiet(["qemu-img", "convert", "-O", "qcow2", raw, out])
        raw.unlink()

    return cached(ctx, "base.qcow2", make)


# ---------------------------------------------------------------- scenarios


def export_raw(ctx):
    """backchain export --format raw vs qemu-img convert -O raw, 1 GiB QCOW2."""
    img = base_qcow2(ctx)
    out_b = ctx.work / "out-b.raw"
    out_q = ctx.work / "out-q.raw"
    return Scenario(
        name="export-raw",
        description=f"export of a {human(qcow2_size(img))} QCOW2 image (60% random data) to raw",
        commands={
            "backchain": Command([ctx.backchain, "export", img, "--format", "raw", "-o", out_b], out_b),
            "qemu-img": Command(["qemu-img", "convert", "-O", "raw", img, out_q], out_q),
        },
        ratios=[Ratio("qemu-img convert / backchain export", "backchain", "qemu-img", 1.0)],
    )


def export_chain(ctx):
    """export of a depth-30 chain: vs depth 1 and vs qemu-img convert."""
    depth = 30
    base = base_qcow2(ctx)
    size = qcow2_size(base)
    clusters = size // CLUSTER

    def make_chain(top):
        # Each overlay rewrites 0.5% of the clusters, picked at random, so
        # the disk keeps about the data of the base (+6%); the depth-1
        # reference below is this same disk flattened into one image.
        chain_dir = top.parent / "chain"
        chain_dir.mkdir(exist_ok=True)
        prev = base.resolve()
        for level in range(1, depth):
            layer = chain_dir / f"layer{level:02}.qcow2"
            run_quiet(["qemu-img", "create", "-q", "-f", "qcow2", "-b", prev, "-F", "qcow2", layer])
            picks = ctx.rng.sample(range(clusters), max(1, clusters // 200))
            cmds = [f"write -P {(level * 7 + i) % 251 + 1} {c * CLUSTER} {CLUSTER}" for i, c in enumerate(picks)]
            qemu_io_script(layer, cmds)
            prev = layer
        top.symlink_to(prev)

    top = cached(ctx, "chain30.qcow2", make_chain)
    # The same disk as one image: the depth-1 reference.
    flat = cached(ctx, "chain30-flat.qcow2", lambda out: run_quiet(["qemu-img", "convert", "-O", "qcow2", top, out]))
    outs = {k: ctx.work / f"out-{k}.raw" for k in ("b30", "b1", "q30")}

    def extra(med, commands):
        b30, b1 = commands["backchain depth 30"], commands["backchain depth 1"]
        return [
            cpu_row("CPU time, backchain depth 30 / depth 1", b30, b1, 1.1),
            steadiness_row("backchain depth 30", b30),
        ]

    return Scenario(
        name="export-chain",
        description=f"export of a depth-{depth} chain ({human(size)}, each layer rewrites 0.5% of the clusters) "
        "to raw, against the same disk as one image",
        commands={
            "backchain depth 30": Command([ctx.backchain, "export", top, "--format", "raw", "-o", outs["b30"]], outs["b30"]),
            "backchain depth 1": Command([ctx.backchain, "export", flat, "--format", "raw", "-o", outs["b1"]], outs["b1"]),
            "qemu-img depth 30": Command(["qemu-img", "convert", "-O", "raw", top, outs["q30"]], outs["q30"]),
        },
        ratios=[
            Ratio("backchain depth 30 speed / depth 1 speed", "backchain depth 30", "backchain depth 1", 0.9),
            Ratio("qemu-img convert / backchain export, depth 30", "backchain depth 30", "qemu-img depth 30", 1.0),
        ],
        extra=extra,
        runs=9,
    )


def write_qcow2(ctx):
    """backchain export --format qcow2 vs qemu-img convert -O qcow2, 2 GiB raw."""
    size = ctx.size(2 * GIB, 256 * MIB)
    raw = cached(ctx, "data.raw", lambda out: sparse_random_raw(ctx, out, size, 0.6))
    out_b = ctx.work / "out-b.qcow2"
    out_q = ctx.work / "out-q.qcow2"
    return Scenario(
        name="write-qcow2",
        description=f"writing a full QCOW2 image from a {human(size)} raw file (60% random data)",
        commands={
            "backchain": Command([ctx.backchain, "export", raw, "--format", "qcow2", "-o", out_b], out_b),
            "qemu-img": Command(["qemu-img", "convert", "-O", "qcow2", raw, out_q], out_q),
        },
        ratios=[Ratio("qemu-img convert / backchain export", "backchain", "qemu-img", 1.0)],
    )


# ---------------------------------------------------------------- HTTP

_SERVERS = []


@atexit.register
def _stop_servers():
    for p in _SERVERS:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def _rss_kib(pid, field):
    """VmRSS / VmHWM of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def http_server(ctx):
    """A server over a repository holding one backup of an ext4 disk with a
    big file and a folder of many files; started once, stopped at exit."""
    if getattr(ctx, "http", None):
        return ctx.http
    big = ctx.size(GIB, 128 * MIB)
    count = ctx.size(10_000, 1_000)
    each = big // count

    def make_src(out):
        (out / "many").mkdir(parents=True)
        with open(out / "big.bin", "wb") as f:
            for _ in range(big // (64 * MIB)):
                f.write(os.urandom(64 * MIB))
        for i in range(count):
            # Half random, half text: deflate pays for some of it.
            (out / "many" / f"file-{i:05}.bin").write_bytes(os.urandom(each // 2) + b"backchain " * (each // 20))

    src = cached(ctx, "http-src", make_src)
    img_size = 2 * big + 256 * MIB
    img = cached(ctx, "http-ext4.img", lambda out: run_quiet(
        ["mkfs.ext4", "-q", "-F", "-b", "4096", "-d", src, out, str(img_size // 1024) + "k"]))
    repo = ctx.work / "http-repo"
    out = run_quiet([ctx.backchain, "--repo", repo, "backup", "--vm", "bench", "--disk", img, "--json"])
    backup_id = json.loads(out)["backup_id"]
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    proc = subprocess.Popen(
        [str(ctx.backchain), "--repo", str(repo), "serve", "--listen", f"127.0.0.1:{port}", "--nbd-listen", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _SERVERS.append(proc)
    base = f"http://127.0.0.1:{port}/api/v1"
    for _ in range(200):
        try:
            urllib.request.urlopen(base + "/health").read()
            break
        except OSError:
            time.sleep(0.05)
    req = urllib.request.Request(
        base + "/restore/mount", data=json.dumps({"backup_id": backup_id, "disk_index": 0}).encode(), method="POST"
    )
    mount = json.loads(urllib.request.urlopen(req).read())
    vol = mount["entries"][0]["path"]
    idle = _rss_kib(proc.pid, "VmRSS")
    ctx.http = (base, mount["mount_id"], proc, vol, backup_id, repo, idle, big, count)
    return ctx.http


def http_zip(ctx):
    """zip of a folder of many files over HTTP: throughput and peak server memory."""
    base, mount, proc, vol, backup_id, repo, idle, big, count = http_server(ctx)
    path = urllib.parse.quote(vol + "/many")
    out_h = ctx.work / "many-http.zip"
    out_c = ctx.work / "many-cli.zip"

    def memory():
        hwm = _rss_kib(proc.pid, "VmHWM")
        return f"server memory: {idle / 1024:.0f} MiB idle, peak {hwm / 1024:.0f} MiB (goal: under idle + 64 MiB)"

    return Scenario(
        name="http-zip-vs-get",
        description=f"zip of a folder of {count} files ({human(big)}) streamed over HTTP vs `backchain get` to a file",
        commands={
            "http": Command(["curl", "-sf", "-o", out_h, f"{base}/restore/{mount}/download-directory?path={path}"], out_h),
            "get": Command([ctx.backchain, "--repo", repo, "get", f"{backup_id}:0", vol + "/many", "-o", out_c], out_c),
        },
        ratios=[Ratio("backchain get / HTTP zip", "http", "get", 0.8)],
        notes=[memory],
    )


SCENARIOS = {
    "export-raw": export_raw,
    "export-chain": export_chain,
    "write-qcow2": write_qcow2,
    # HTTP zip against `backchain get` of the same folder; the HTTP download
    # and zip scenarios of the issues are in restore_scenarios.py.
    "http-zip-vs-get": http_zip,
}
# Backup (issue 3) and restore: CLI, FUSE, HTTP (issues 4-6) scenarios live
# beside this file; they build on this module's classes and input helpers.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import backup_scenarios  # noqa: E402
import push_scenarios  # noqa: E402
import restore_scenarios  # noqa: E402
import fs_scenarios  # noqa: E402
import retention_scenarios  # noqa: E402
import nbd_scenarios  # noqa: E402

SCENARIOS.update(backup_scenarios.scenarios(sys.modules[__name__]))
SCENARIOS.update(restore_scenarios.scenarios(sys.modules[__name__]))
SCENARIOS.update(push_scenarios.scenarios(sys.modules[__name__]))
SCENARIOS.update(fs_scenarios.scenarios(sys.modules[__name__]))
SCENARIOS.update(retention_scenarios.scenarios(sys.modules[__name__]))
SCENARIOS.update(nbd_scenarios.scenarios(sys.modules[__name__]))


# ---------------------------------------------------------------- running


def human(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:g} {unit}"
        n /= 1024


def qcow2_size(img):
    import json

    return json.loads(run_quiet(["qemu-img", "info", "--output=json", img]))["virtual-size"]


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid):
    """utime + stime of a process, in seconds (from /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of proc(5); fields[0] here is field 3 (state).
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def time_once(cmd):
    """Runs a command; returns (wall seconds, CPU seconds: user + system,
    the server's CPU seconds over the run or None)."""
    if cmd.output is not None and cmd.output.is_dir() and not cmd.output.is_symlink():
        shutil.rmtree(cmd.output)
    elif cmd.output is not None and (cmd.output.exists() or cmd.output.is_symlink()):
        cmd.output.unlink()
    if cmd.before is not None:
        subprocess.run([str(a) for a in cmd.before], check=True)
    pid = cmd.server_pid()
    server_before = proc_cpu(pid) if pid is not None else None
    t = time.perf_counter()
    argv = [str(a) for a in cmd.argv]
    rss = tempfile.NamedTemporaryFile() if cmd.memory else None
    if rss is not None:
        argv = ["/usr/bin/time", "-f", "%M", "-o", rss.name, *argv]
    with tempfile.TemporaryFile() as errf:
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=errf)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        server = proc_cpu(pid) - server_before if pid is not None else None
        p.returncode = os.waitstatus_to_exitcode(status)
        errf.seek(0)
        err = errf.read().decode(errors="replace")
    if p.returncode != 0:
        sys.exit(f"command failed: {' '.join(map(str, cmd.argv))}\n{err}")
    if rss is not None:
        cmd.peak_kib = max(cmd.peak_kib, int(open(rss.name).read().split()[-1]))
        rss.close()
    return wall, ru.ru_utime + ru.ru_stime, server


def run_scenario(sc, runs):
    """Returns per label: median wall time, median CPU time, all wall times.
    Every run's figures are also kept on the commands (walls, cpus,
    server_cpus)."""
    runs = max(runs, sc.runs or 0)
    times = {label: [] for label in sc.commands}
    cpu = {label: [] for label in sc.commands}
    # One untimed round first: both tools start with the same warm inputs.
    for cmd in sc.commands.values():
        time_once(cmd)
    for r in range(runs):
        labels = list(sc.commands)
        # Alternate the order so neither tool always runs first.
        if r % 2:
            labels.reverse()
        for label in labels:
            cmd = sc.commands[label]
            w, c, s = time_once(cmd)
            times[label].append(w)
            cpu[label].append(c)
            cmd.walls.append(w)
            cmd.cpus.append(c)
            if s is not None:
                cmd.server_cpus.append(s)
    for cmd in sc.commands.values():
        if cmd.output is not None and cmd.output.is_dir():
            shutil.rmtree(cmd.output)
        elif cmd.output is not None and cmd.output.exists():
            cmd.output.unlink()
    med = {label: statistics.median(t) for label, t in times.items()}
    med_cpu = {label: statistics.median(t) for label, t in cpu.items()}
    return med, med_cpu, times


def machine_info():
    def first(cmd):
        try:
            return subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout.strip().splitlines()[0]
        except (OSError, subprocess.CalledProcessError, IndexError):
            return "unknown"

    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / (1 << 20):.1f} GiB"
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": first(["nproc"]),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "qemu-img": first(["qemu-img", "--version"]),
        "backchain": first(["git", "-C", str(ROOT), "describe", "--always", "--dirty"]),
    }


def render(results, info, args, work_fs):
    lines = [
        "# Benchmarks",
        "",
        "Generated by `bench/run.py" + (" --quick" if args.quick else "") + "`; do not edit by hand, re-run it.",
        "",
        "| | |",
        "|---|---|",
    ]
    for k, v in info.items():
        lines.append(f"| {k} | {v} |")
    lines += [
        f"| runs | {args.runs} per command, medians, order alternating |",
        f"| files | inputs and outputs in `{work_fs}`; every input is read once untimed first, so both tools read "
        "the same warm page cache |",
        "",
        "Ratios: reference time / measured time — higher is better, 1.0 means as fast.",
        "",
        "The target applies to the wall-clock ratio; the CPU ratio (user + system time) is shown",
        "because it is far less sensitive to other load on the machine.",
        "",
        "| scenario | ratio | wall-clock | target | met | CPU time |",
        "|---|---|---|---|---|---|",
    ]
    for sc, med, cpu, _ in results:
        for r in sc.ratios:
            v = med[r.reference] / med[r.measured] * r.scale
            c = cpu[r.reference] / max(cpu[r.measured], 1e-6) * r.scale
            if r.target is None:
                goal, met = "", ""
            else:
                goal, met = f">= {r.target:.2f}", "yes" if v >= r.target else "NO"
            lines.append(f"| {sc.name} | {r.name} | {v:.2f} | {goal} | {met} | {c:.2f} |")
    lines += [
        "",
        "Median times:",
        "",
        "| scenario | command | wall s | CPU s | server CPU s | CPU s per GiB (+ server) | peak RSS | all runs, wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for sc, med, cpu, times in results:
        for label, t in med.items():
            cmd = sc.commands[label]
            runs = ", ".join(f"{x:.2f}" for x in times[label])
            rss = f"{cmd.peak_kib / 1024:.1f} MiB" if cmd.memory else ""
            srv = cmd.median_server_cpu()
            srv_s = "" if srv is None else f"{srv:.3f}"
            per = ""
            if cmd.bytes:
                per = f"{cmd.per_gib(cpu[label]):.3f}" + ("" if srv is None else f" (+ {cmd.per_gib(srv):.3f})")
            lines.append(f"| {sc.name} | {label} | {t:.3f} | {cpu[label]:.3f} | {srv_s} | {per} | {rss} | {runs} |")
    if any(sc.rows for sc, *_ in results):
        lines += [
            "",
            "Other measurements (absolute goals, memory, sizes):",
            "",
            "| scenario | measurement | value | goal | met |",
            "|---|---|---|---|---|",
        ]
        for sc, *_ in results:
            for name, value, goal, met in sc.rows:
                lines.append(f"| {sc.name} | {name} | {value} | {goal} | {met} |")
    lines += ["", "Scenarios:", ""]
    for sc, *_ in results:
        lines.append(f"* **{sc.name}**: {sc.description}.")
        for n in sc.notes:
            lines.append(f"  {n() if callable(n) else n}")
        for cmd_label, cmd in sc.commands.items():
            argv = " ".join(Path(str(a)).name if i == 0 else str(a) for i, a in enumerate(cmd.argv))
            lines.append(f"  * {cmd_label}: `{argv}`")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller inputs (1/8), 3 runs")
    ap.add_argument("--only", action="append", choices=list(SCENARIOS), help="run only this scenario (repeatable)")
    ap.add_argument("--runs", type=int, help="timed runs per command (default 5, quick 3)")
    ap.add_argument("--dir", type=Path, help="scratch folder parent (default /dev/shm, else the temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (inputs are reused with --work)")
    ap.add_argument("--work", type=Path, help="use this scratch folder as is (keeps generated inputs)")
    ap.add_argument("--no-write", action="store_true", help="print the table only, leave docs/benchmarks.md")
    ap.add_argument("--no-build", action="store_true", help="use the existing release binary")
    ap.add_argument("--list", action="store_true", help="list scenarios and exit")
    ap.add_argument("--seed", type=int, default=1, help="seed for the generated inputs")
    args = ap.parse_args()
    if args.list:
        for name, f in SCENARIOS.items():
            print(f"{name}: {(f.__doc__ or '').strip()}")
        return
    args.runs = args.runs or (3 if args.quick else 5)
    for t in ("qemu-img", "qemu-io"):
        if shutil.which(t) is None:
            sys.exit(f"{t} is missing (apt-get install qemu-utils)")

    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "backchain"], cwd=ROOT, check=True)
    backchain = target / "release" / "backchain"

    if args.work:
        work = args.work
        work.mkdir(parents=True, exist_ok=True)
    else:
        parent = args.dir or (Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir()))
        work = Path(tempfile.mkdtemp(prefix="backchain-bench-", dir=parent))
    work_fs = run_quiet(["df", "--output=fstype", str(work)]).split()[-1]
    ctx = Context(work=work, backchain=backchain, quick=args.quick, rng=random.Random(args.seed))
    results = []
    try:
        for name in args.only or list(SCENARIOS):
            print(f"== {name}: generating inputs", flush=True)
            sc = SCENARIOS[name](ctx)
            print(f"== {name}: {sc.description}", flush=True)
            med, cpu, times = run_scenario(sc, args.runs)
            for label, t in med.items():
                runs = ", ".join(f"{x:.2f}" for x in times[label])
                srv = sc.commands[label].median_server_cpu()
                srv = "" if srv is None else f"  server cpu {srv:.3f} s"
                print(f"   {label:<22} {t:8.3f} s  cpu {cpu[label]:.3f} s{srv}  ({runs})")
            for r in sc.ratios:
                v = med[r.reference] / med[r.measured] * r.scale
                goal = "" if r.target is None else f" (target >= {r.target})"
                print(f"   {r.name}: {v:.2f}{goal}")
            if sc.extra is not None:
                sc.rows = sc.extra(med, sc.commands)
                for row in sc.rows:
                    print(f"   {row[0]}: {row[1]}" + (f" (goal {row[2]}: {row[3]})" if row[2] else ""))
            results.append((sc, med, cpu, times))
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
        elif not args.work:
            print(f"scratch folder kept: {work}")

    text = render(results, machine_info(), args, f"{work_fs} ({work.parent})")
    print()
    print(text)
    if not args.no_write:
        out = ROOT / "docs" / "benchmarks.md"
        out.parent.mkdir(exist_ok=True)
        # Hand-written analysis below the NOTES marker survives a re-run.
        if out.exists() and NOTES in out.read_text():
            text += "\n" + NOTES + out.read_text().split(NOTES, 1)[1]
        out.write_text(text)
        print(f"written to {out}")


if __name__ == "__main__":
    main()
