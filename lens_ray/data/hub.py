"""Whether the Hugging Face hub can be reached from here, asked once with a short timeout: offline, a hub id
(model or data set) ends in one line within seconds instead of the hub client's retries (~25 s) and traceback.
No Ray."""
from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

OFFLINE_VALUES = ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=1)
def hub_unreachable(timeout: float = 3.0) -> str | None:
    """None when the hub answers a TCP connection; else why not (offline mode, no name resolution, refused)."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").lower() in OFFLINE_VALUES:
            return f"{var} is set"
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return f"cannot connect to {host}:{port} ({exc.strerror or exc})"
    return None
