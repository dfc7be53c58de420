"""Push scenario (issue 14): a full push of a 2 GiB disk (60% data) with
`nbdcopy --flush` into a backchain push target, against the same push into
qemu-nbd serving a fresh QCOW2 (the original design: one qemu-nbd per disk).

Registered by bench/run.py; `h` is that module. Each timed run is one
agent: `python3 push_scenarios.py backchain|qemu-nbd ...` (below) does the
whole exchange, so both sides pay for their setup (the HTTP calls and the
commit; qemu-img create and qemu-nbd's start-up).
"""

import functools
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

LIVE_TIMEOUT = 30  # seconds for a server to come up


def _free_port():
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


def _hub(h, ctx):
    """One `backchain serve` with an NBD unix socket, for every run."""
    if getattr(ctx, "push_hub", None):
        return ctx.push_hub
    repo = ctx.work / "push-repo"
    sock = ctx.work / "push-nbd.sock"
    port = _free_port()
    log = open(ctx.work / "push-serve.log", "wb")
    proc = subprocess.Popen(
        [str(ctx.backchain), "--repo", str(repo), "serve", "--listen", f"127.0.0.1:{port}",
         "--nbd-listen", f"unix:{sock}"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    h._SERVERS.append(proc)
    base = f"http://127.0.0.1:{port}/api/v1"
    deadline = time.time() + LIVE_TIMEOUT
    while True:
        try:
            urllib.request.urlopen(base + "/health").read()
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                sys.exit(f"backchain serve did not come up; see {log.name}")
            time.sleep(0.05)
    ctx.push_hub = (base, repo / "api.token")
    return ctx.push_hub


def push_full(h, ctx):
    """nbdcopy into a backchain push target vs into qemu-nbd over a fresh QCOW2."""
    size = ctx.size(2 * h.GIB, 256 * h.MIB)
    raw = h.cached(ctx, "data.raw", lambda out: h.sparse_random_raw(ctx, out, size, 0.6))
    base, token = _hub(h, ctx)
    me = Path(__file__).resolve()
    qcow = ctx.work / "push-qemu.qcow2"
    return h.Scenario(
        name="push-full",
        description=f"full push of a {h.human(size)} raw disk (60% random data) by `nbdcopy --flush`: into a "
        "backchain push target (POST /backups, nbdcopy, POST complete, commit) against into qemu-nbd serving a "
        "fresh QCOW2 (qemu-img create, qemu-nbd start, nbdcopy, qemu-nbd stop)",
        commands={
            "backchain push": h.Command([sys.executable, me, "backchain", base, token, raw, str(size)]),
            "qemu-nbd push": h.Command([sys.executable, me, "qemu-nbd", raw, str(size), qcow], qcow),
        },
        ratios=[h.Ratio("qemu-nbd push / backchain push", "backchain push", "qemu-nbd push", 1.0)],
        notes=["Every backchain run is a new full backup of the same VM; both write to the work folder."],
    )


def _call(base, token, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + Path(token).read_text().strip())
    req.add_header("Content-Type", "application/json")
    return json.loads(urllib.request.urlopen(req).read())


def agent_backchain(base, token, raw, size):
    job = _call(base, token, "POST", "/backups",
                {"vm_name": "push", "disks": [{"push": {"size": int(size)}}], "backup_type": "full"})
    subprocess.run(["nbdcopy", "--flush", raw, job["disks"][0]["nbd_uri"]], check=True)
    done = _call(base, token, "POST", f"/backups/{job['backup_id']}/complete",
                 {"disk_index": 0, "change_id": "bench"})
    if done["status"] != "completed":
        sys.exit(f"push did not commit: {done}")


def agent_qemu_nbd(raw, size, qcow):
    if os.path.exists(qcow):
        os.unlink(qcow)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", qcow, size], check=True)
    sock = f"{qcow}.sock"
    proc = subprocess.Popen(["qemu-nbd", "-f", "qcow2", "-k", sock, "-t", qcow])
    try:
        deadline = time.time() + LIVE_TIMEOUT
        while not os.path.exists(sock):
            if time.time() > deadline:
                sys.exit("qemu-nbd did not come up")
            time.sleep(0.01)
        subprocess.run(["nbdcopy", "--flush", raw, f"nbd+unix:///?socket={sock}"], check=True)
    finally:
        proc.terminate()
        proc.wait()


def bind(h, f):
    g = functools.partial(f, h)
    g.__doc__ = f.__doc__
    return g


def scenarios(h):
    return {"push-full": bind(h, push_full)}


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "backchain":
        agent_backchain(*sys.argv[2:])
    elif len(sys.argv) == 5 and sys.argv[1] == "qemu-nbd":
        agent_qemu_nbd(*sys.argv[2:])
    else:
        sys.exit("run bench/run.py --only push-full")
