"""NBD scenarios (issue 14): reading a restore-point export.

Registered by bench/run.py; `h` is that module. export-read copies a whole
export with nbdcopy (its default: several connections, many requests in
flight) to `null:`, from `backchain nbd-export` and from `qemu-nbd -r`
serving the same QCOW2 chain (the 60%-data base image under one overlay
that rewrites 1% of its clusters), both on unix sockets. The servers start
once and are stopped at exit.
"""

import functools
import subprocess
import sys
import time


def _chain(h, ctx):
    base = h.base_qcow2(ctx)
    clusters = h.qcow2_size(base) // h.CLUSTER

    def make(top):
        h.run_quiet(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base.resolve(), "-F", "qcow2", top])
        picks = ctx.rng.sample(range(clusters), max(1, clusters // 100))
        h.qemu_io_script(top, [f"write -P {i % 251 + 1} {c * h.CLUSTER} {h.CLUSTER}" for i, c in enumerate(picks)])

    return h.cached(ctx, "export-read-top.qcow2", make)


def _serve(h, argv):
    proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    h._SERVERS.append(proc)
    return proc


def _wait_socket(path):
    for _ in range(400):
        if path.exists():
            return
        time.sleep(0.025)
    raise RuntimeError(f"{path} never appeared")


def export_read(h, ctx):
    """nbdcopy of a restore-point export: backchain vs qemu-nbd -r."""
    top = _chain(h, ctx)
    sock_b = ctx.work / "export-read-backchain.sock"
    sock_q = ctx.work / "export-read-qemu-nbd.sock"
    for s in (sock_b, sock_q):
        s.unlink(missing_ok=True)
    proc = _serve(h, [ctx.backchain, "nbd-export", top, "--listen", f"unix:{sock_b}"])
    uri_b = proc.stdout.readline().split()[1]
    _serve(h, ["qemu-nbd", "-r", "-t", "-e", "16", "-f", "qcow2", "-x", "disk", "-k", sock_q, top])
    _wait_socket(sock_q)
    uri_q = f"nbd+unix:///disk?socket={sock_q}"
    return h.Scenario(
        name="export-read",
        description=f"nbdcopy of a {h.human(h.qcow2_size(top))} two-image chain (60% data) exported over NBD, "
        "to null:",
        commands={
            "backchain nbd-export": h.Command(["nbdcopy", uri_b, "null:"]),
            "qemu-nbd -r": h.Command(["nbdcopy", uri_q, "null:"]),
        },
        ratios=[h.Ratio("qemu-nbd time / backchain time", "backchain nbd-export", "qemu-nbd -r", 1.0)],
    )


def scenarios(h):
    g = functools.partial(export_read, h)
    g.__doc__ = export_read.__doc__
    return {"export-read": g}


if __name__ == "__main__":
    sys.exit("run bench/run.py --only export-read")
