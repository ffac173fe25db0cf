"""Process-level time and memory measurement shared by the benchmark scripts (Linux /proc)."""
from __future__ import annotations

import resource
import subprocess
import time

GB = 1024 ** 3


def status_bytes(key: str, pid: str | int = "self") -> int:
    """A ``/proc/<pid>/status`` size field (``VmRSS``, ``VmHWM``, ``VmSize``) in bytes; 0 if unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM, what ``ru_maxrss`` reports); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss(reset: bool) -> int:
    """Peak RSS in bytes since the last reset (or since the start, where resetting is not allowed)."""
    return status_bytes("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cap_address_space(extra_gb: float) -> None:
    """Let this process's address space grow by at most ``extra_gb`` from now (best effort)."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = status_bytes("VmSize") + int(extra_gb * GB)
        if hard == resource.RLIM_INFINITY or cap < hard:
            resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (OSError, ValueError):
        pass


def run_watched(cmd: list[str], timeout: float, rss_limit_gb: float, poll_s: float = 0.2):
    """Run ``cmd``, killing it past ``timeout`` seconds or ``rss_limit_gb`` of RSS.

    Returns:
        (output, wall seconds, reason it was killed or None, peak RSS seen in bytes, return code).
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    reason, peak_seen = None, 0
    while proc.poll() is None:
        rss = status_bytes("VmRSS", proc.pid)
        peak_seen = max(peak_seen, rss)
        if time.perf_counter() - start > timeout:
            reason = f"timed out after {timeout:g} s"
        elif rss > rss_limit_gb * GB:
            reason = f"killed: RSS passed {rss_limit_gb:g} GB"
        if reason:
            proc.kill()
            break
        time.sleep(poll_s)
    log = proc.communicate()[0]
    return log, time.perf_counter() - start, reason, peak_seen, proc.returncode
