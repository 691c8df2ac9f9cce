"""Who a worker process is (`host:pid:nonce`) and whether such a process still exists."""

from __future__ import annotations

import os
import socket


def worker_identity(nonce: str) -> str:
    """`host:pid:nonce`: names this process in history rows, the lease and job claims."""
    return f"{socket.gethostname()}:{os.getpid()}:{nonce}"


def worker_process_alive(worker: str) -> bool:
    """False only when the worker (`host:pid:nonce`) ran on this host and its process is gone."""
    host, _, rest = worker.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True  # cannot tell for another host: assume it is still running
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
