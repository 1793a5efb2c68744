"""A process's own peak resident memory, for benchmark sides run in child processes.

Not getrusage's ru_maxrss: Linux keeps the larger of the old and new high-water marks across
exec, so a child forked from a parent that holds 1 GB reports at least 1 GB whatever it does.
/proc/self/status's VmHWM belongs to the address space exec created, so it is the child's own.
"""

from __future__ import annotations

import resource


def peak_rss_kib() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, no /proc


def peak_rss_gb() -> float:
    return peak_rss_kib() / 1024**2
