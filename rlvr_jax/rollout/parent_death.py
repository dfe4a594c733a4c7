"""Make a child process die with its parent, however the parent dies (Linux ``PR_SET_PDEATHSIG``).

``wrap_die_with_parent(cmd, python)`` prefixes a command with a tiny Python exec shim: it asks the kernel to
send SIGTERM to the process when its parent dies (SIGKILL of the parent included: no finalizer or atexit
hook of the parent has to run), checks that the parent is still the launcher (it may have died before the
request was made), then ``execvp``s the real command, which keeps the pid, the process group and the
death signal. Used by rlvr_jax/rollout/vllm_server.py so a vLLM server never outlives its trainer.

The kernel's "parent" is the thread that forked the child: start the child from a thread that lives as long
as the child should (e.g. the main thread). Not Linux: the command is returned unchanged.
"""
from __future__ import annotations

import os
import sys

# Runs before vLLM: asks the kernel to SIGTERM this process when its parent dies, checks the parent has not
# already died (then the new parent is not the launcher), and execs the command in place.
_PDEATHSIG_SHIM = (
    "import ctypes, os, signal, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "if libc.prctl(1, int(signal.SIGTERM), 0, 0, 0) != 0:\n"  # 1 = PR_SET_PDEATHSIG
    "    sys.exit('prctl(PR_SET_PDEATHSIG) failed: errno %d' % ctypes.get_errno())\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('the launching process died before the child started')\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n")


def wrap_die_with_parent(cmd: list[str], python: str, parent_pid: int | None = None) -> list[str]:
    """``cmd`` behind the PR_SET_PDEATHSIG shim (the child gets SIGTERM when ``parent_pid`` dies)."""
    if not sys.platform.startswith("linux"):
        return list(cmd)
    parent = os.getpid() if parent_pid is None else int(parent_pid)
    return [python, "-c", _PDEATHSIG_SHIM, str(parent), *cmd]
