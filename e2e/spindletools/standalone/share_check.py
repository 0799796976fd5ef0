"""Two Targets on the same engine ring: each one's part of the reads.

  python3 -m spindletools.standalone.share_check HOST:PORT --heavy IQN NAME FILE QD
      --light IQN NAME FILE --seconds S --min-share F
      [--reweigh MANIFEST NEW_MANIFEST AGENT_PID --min-ratio R]

Stamps the first blocks of both backing files, then reads both Targets at once for S seconds
with the asyncio initiator (spindletools.iscsi.reader: real iSCSI, every block checked), the
heavy one keeping QD reads outstanding, the light one one. The light Target's fair share is
half the reads; prints both Targets' figures and exits non-zero when the light one got less
than F of its fair share, or when any read failed.

With --reweigh both Targets read at QD; once their sessions are logged in, NEW_MANIFEST
replaces MANIFEST and the agent is told to reload (SIGHUP), and the reads start 2 s later in
the same sessions: the second Target (--light's) must then get at least R times the first's
reads, and no session may have been closed.
"""
import argparse
import asyncio
import os
import shutil
import signal
import sys

from spindletools.iscsi import reader

SPAN = 16


def stamp(path, name):
    with open(path, "r+b") as f:
        for block in range(SPAN):
            f.seek(block * reader.BLOCK)
            f.write(reader.stamp(name, block))


async def read(spec, reweigh):
    """The reads; with `reweigh`, the manifest is replaced and reloaded once the sessions
    are logged in, and the reads start 2 s later in those sessions."""
    if not reweigh:
        return await reader.run_worker(spec)
    loop = asyncio.get_running_loop()
    go = loop.create_future()

    def ready(_live):
        manifest, new, pid = reweigh
        shutil.copyfile(new, manifest)
        os.kill(int(pid), signal.SIGHUP)
        loop.call_later(2.0, go.set_result, None)

    return await reader.run_worker(spec, go, ready)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("portal")
    p.add_argument("--heavy", nargs=4, metavar=("IQN", "NAME", "FILE", "QD"), required=True)
    p.add_argument("--light", nargs=3, metavar=("IQN", "NAME", "FILE"), required=True)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--min-share", type=float, default=0.0)
    p.add_argument("--reweigh", nargs=3, metavar=("MANIFEST", "NEW_MANIFEST", "AGENT_PID"))
    p.add_argument("--min-ratio", type=float, default=0.0)
    a = p.parse_args()
    host, port = a.portal.rsplit(":", 1)
    (h_iqn, h_name, h_file, h_qd), (l_iqn, l_name, l_file) = a.heavy, a.light
    stamp(h_file, h_name)
    stamp(l_file, l_name)
    spec = reader.Spec(
        host=host, port=int(port), seconds=a.seconds, qd=1, span_blocks=SPAN,
        targets=[{"name": h_name, "iqn": h_iqn, "lun": 0, "qd": int(h_qd)},
                 {"name": l_name, "iqn": l_iqn, "lun": 0,
                  "qd": int(h_qd) if a.reweigh else 1}],
        extra={"warmup": 1.0})
    results = {r.target: r for r in asyncio.run(read(spec, a.reweigh))}
    errors = [f"{r.target}: {r.error}" for r in results.values() if r.error]
    heavy, light = results[h_name], results[l_name]
    total = heavy.reads + light.reads
    secs = spec.extra["elapsed"]
    share = light.reads / (total / 2) if total else 0.0

    def figures(r):
        lat = r.latency_sum / r.reads * 1e3 if r.reads else 0.0
        return f"{r.reads / secs:.0f} IOPS, mean latency {lat:.2f} ms"

    print(f"heavy (QD {h_qd}): {figures(heavy)}; light (QD 1): {figures(light)}; "
          f"light ÷ fair share: {share:.2f} (bound {a.min_share})")
    if errors or not total:
        sys.exit("reads failed: " + "; ".join(errors or ["no read completed"]))
    if a.reweigh:
        ratio = light.reads / max(heavy.reads, 1)
        print(f"after the reload: second ÷ first Target's reads {ratio:.2f} "
              f"(bound {a.min_ratio})")
        if ratio < a.min_ratio:
            sys.exit(f"the reweighed Target got {ratio:.2f} times the other's reads, "
                     f"below {a.min_ratio}")
        return
    if share < a.min_share:
        sys.exit(f"the light Target got {share:.2f} of its fair share, below {a.min_share}")


if __name__ == "__main__":
    main()
