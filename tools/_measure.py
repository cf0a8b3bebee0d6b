"""Wall time and peak resident memory of a command run as its own process (for the benchmarks)."""

from __future__ import annotations

import os
import subprocess
import time


def run(cmd: list[str], cwd=None) -> dict:
    """Run `cmd`; its wall time, and its peak resident memory as the kernel counted it (`os.wait4`)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(cmd)} failed")
    return {"seconds": round(time.perf_counter() - t, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}
