"""How many threads torch should use: the CPUs this process may use, minus the ones others keep busy.

torch's default is one intra-op thread per physical core of the machine. On a shared machine
that is the wrong number twice over: the process may be allowed fewer CPUs than the machine
has (``taskset``, a container's cpuset or CPU quota), and CPUs that other processes keep busy
do not get faster by adding threads -- an intra-op thread that is descheduled holds up the
others at every barrier, which costs far more than the thread gains (measured in
``benchmarks/bench_threads.py``).

:func:`allowed_cpus` is the most this process can use: its CPU affinity, capped by a cgroup
CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``). :func:`auto_threads` subtracts what other
processes used on those CPUs while this one was starting up (``/proc/stat``, minus this
process's own CPU time), so it costs no extra waiting when it is called a second or more after
:func:`mark` (the CLI marks at start-up, before the heavy imports). Where ``/proc/stat`` cannot
be read it falls back to :func:`allowed_cpus`.

Standard library only until :func:`set_threads` (which imports torch).
"""

from __future__ import annotations

import math
import os
import time

#: Shortest sampling window of /proc/stat; a shorter one is topped up by sleeping.
MIN_WINDOW_S = 0.05
_CLOCK_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_mark: tuple[float, float, dict[int, float]] | None = None


def _affinity() -> set[int]:
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def cgroup_cpu_quota() -> float | None:
    """CPUs' worth of time the cgroup quota allows (e.g. 1.5), or None without a quota."""
    candidates = (("/sys/fs/cgroup/cpu.max", None),
                  ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
                  ("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us"))
    for quota_file, period_file in candidates:
        try:
            with open(quota_file) as f:
                fields = f.read().split()
            if period_file is None:  # v2: "max 100000" or "150000 100000"
                quota, period = fields[0], fields[1]
            else:
                with open(period_file) as f:
                    quota, period = fields[0], f.read().split()[0]
            if quota in ("max", "-1") or int(quota) <= 0:
                return None
            return int(quota) / int(period)
        except (OSError, ValueError, IndexError):
            continue
    return None


def allowed_cpus() -> int:
    """CPUs this process may use: its affinity, capped by the cgroup quota (at least 1)."""
    n = len(_affinity()) or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    return n


def _idle_ticks() -> dict[int, float]:
    """Idle + iowait clock ticks of each CPU this process may run on (``/proc/stat``)."""
    cpus, idle = _affinity(), {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3:4].isdigit():
                name, *values = line.split()
                cpu = int(name[3:])
                if cpu in cpus:
                    idle[cpu] = float(values[3]) + float(values[4])
    return idle


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def mark() -> None:
    """Start the sampling window of :func:`auto_threads` (cheap; the CLI calls it first thing)."""
    global _mark
    try:
        _mark = (time.monotonic(), _own_cpu_s(), _idle_ticks())
    except (OSError, ValueError):
        _mark = None


def busy_elsewhere() -> float | None:
    """CPUs' worth of time that *other* processes used on this process's CPUs since
    :func:`mark` (or over the last :data:`MIN_WINDOW_S`); None when it cannot be measured."""
    if _mark is None:
        mark()
        if _mark is None:
            return None
    start, own_start, idle_start = _mark
    elapsed = time.monotonic() - start
    if elapsed < MIN_WINDOW_S:
        time.sleep(MIN_WINDOW_S - elapsed)
    try:
        idle_now = _idle_ticks()
    except (OSError, ValueError):
        return None
    elapsed = time.monotonic() - start
    own = _own_cpu_s() - own_start
    common = set(idle_start) & set(idle_now)
    if not common or elapsed <= 0:
        return None
    idle_s = sum(idle_now[c] - idle_start[c] for c in common) / _CLOCK_TICK
    busy = len(common) * elapsed - idle_s - own
    return max(0.0, busy / elapsed)


def auto_threads() -> int:
    """The default thread count: :func:`allowed_cpus` minus the CPUs other processes keep busy
    (rounded), at least 1. Calls :func:`mark` again, so a long-running process (the server)
    can call it before each job to follow the machine's load."""
    allowed = allowed_cpus()
    busy = busy_elsewhere()
    mark()
    if busy is None:
        return allowed
    return max(1, min(allowed, allowed - int(busy + 0.5)))


def set_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread count: ``threads`` (the ``--threads`` option), else the
    environment's ``OMP_NUM_THREADS`` when set, else :func:`auto_threads`. Returns the count. Raises :class:`~asuka.errors.InputError` for
    a count < 1."""
    from asuka.errors import InputError

    if threads is not None and (isinstance(threads, bool) or int(threads) != threads or threads < 1):
        raise InputError(f"--threads must be an integer >= 1, got {threads!r}")
    import torch

    if threads is None and os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        return torch.get_num_threads()  # the user's explicit OMP_NUM_THREADS, which torch honours
    n = int(threads) if threads is not None else auto_threads()

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def add_threads_option(parser) -> None:
    """``--threads N``: one definition for every command that runs torch."""
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch CPU threads (default: the CPUs this process may use, minus those "
                        "other processes keep busy; see asuka/threads.py)")
