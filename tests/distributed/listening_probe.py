"""Start a local Ray the way jobs do (ray_session.connect), run a 2-worker DDP fit, and print every address a
process of this Ray listens on while it runs (JSON list)."""
import json
import os
import sys
import threading
import time

import numpy as np
import psutil

from lens_ray.distributed.session import connect

connect(log=lambda m: None)
import ray  # noqa: E402

from lens_ray.config import ResourcesConfig, VAEConfig  # noqa: E402
from lens_ray.core.records import SeedData  # noqa: E402
from lens_ray.distributed.training import train_vaes  # noqa: E402
from lens_ray.store.storage import Storage  # noqa: E402

seen, stop = set(), threading.Event()


def sample():
    while not stop.is_set():
        tree = {os.getpid()} | {c.pid for c in psutil.Process().children(recursive=True)}
        for c in psutil.net_connections("inet"):
            if c.status == "LISTEN" and c.pid in tree:
                seen.add((c.laddr.ip, psutil.Process(c.pid).name()))
        time.sleep(0.2)


t = threading.Thread(target=sample)
t.start()
rng = np.random.default_rng(0)
seeds = [SeedData(0, *(rng.standard_normal((n, 8)).astype(np.float32) for n in (64, 64, 8, 8)))]
train_vaes(VAEConfig(latent_dim=2, hidden_dims=(4,), epochs=30), seeds, "listen", Storage(sys.argv[1]),
         ResourcesConfig(vae_workers=2, vae_cpus_per_worker=0.5))
stop.set()
t.join()
ray.shutdown()
print(json.dumps(sorted(seen)))
