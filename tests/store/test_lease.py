"""One job per output folder, on local storage and on S3 (moto): a second job is refused with the holder's id,
a stale lease (dead holder) is taken over, and of two jobs racing for a free lease exactly one wins."""
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from lens_ray.store.backends import LEASE
from lens_ray.store.lease import Lease, LeaseError
from lens_ray.store.storage import Storage


@pytest.fixture(params=["local", "s3"])
def folder(request, tmp_path):
    if request.param == "local":
        return Storage(str(tmp_path / "run"))
    server = request.getfixturevalue("s3_server")
    return Storage(f"s3://{server['bucket']}/lease-{tmp_path.name}")


def test_second_job_is_refused_naming_the_holder(folder):
    first = Lease(folder, what="run a")
    with first.held():
        with pytest.raises(LeaseError, match=first.doc["holder"]):
            Lease(folder, what="run b").acquire()
    assert not folder.exists(LEASE)                                    # released at the end
    with Lease(folder).held():                                        # and free again
        pass


def test_lease_of_a_dead_process_is_taken_over(folder):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    first = Lease(folder)
    first.doc["pid"] = int(dead.stdout)                               # a holder on this host that is gone
    first.acquire()
    first._stop.set()                                                 # it stopped refreshing: it died
    taker = Lease(folder)
    taker.acquire()
    assert json.loads(folder.read_bytes(LEASE))["holder"] == taker.doc["holder"]
    taker.release()


def test_an_expired_lease_is_taken_over_and_waiting_works(folder):
    first = Lease(folder, ttl_s=1.0)
    first.acquire()
    first._stop.set()                                                 # stops refreshing; its ttl runs out
    time.sleep(1.5)
    second = Lease(folder, ttl_s=60)
    t0 = time.time()
    second.acquire(wait=True, poll_s=0.2)
    assert time.time() - t0 < 5
    second.release()


def test_of_two_racing_jobs_exactly_one_gets_the_lease(folder):
    leases = [Lease(folder) for _ in range(6)]

    def take(lease):
        try:
            lease.acquire()
            return True
        except LeaseError:
            return False

    with ThreadPoolExecutor(6) as pool:
        won = list(pool.map(take, leases))
    assert sum(won) == 1
    next(lease for lease, w in zip(leases, won) if w).release()


def test_a_held_lease_stays_refused_past_several_ttls(folder):
    """Its heartbeat (every ttl/4) keeps it: after 3 ttls of holding, another job is still refused."""
    holder = Lease(folder, ttl_s=0.6, what="long job")
    with holder.held():
        time.sleep(1.8)
        with pytest.raises(LeaseError, match="long job"):
            Lease(folder, ttl_s=0.6).acquire()
        holder.ensure_held()                                          # and the holder never thought it lost


def _overwrite(folder, doc: dict) -> None:
    """Another job writing the lease file without asking (an operator, a clock-skewed host)."""
    folder.write_bytes(LEASE, json.dumps(doc).encode())


def test_a_foreign_lease_stops_the_holder_within_a_beat_and_is_left_in_place(folder):
    holder = Lease(folder, ttl_s=0.8)
    holder.acquire()
    foreign = {"holder": "elsewhere:1:abcd", "host": "elsewhere", "pid": 1, "what": "other job",
               "heartbeat": time.time() + 60, "ttl_s": 600}
    _overwrite(folder, foreign)
    deadline = time.time() + 0.8 / 4 * 3                              # a beat is ttl/4; allow three
    while holder.lost is None and time.time() < deadline:
        time.sleep(0.02)
    assert holder.lost and "took over" in holder.lost
    with pytest.raises(LeaseError, match="lease lost"):
        holder.ensure_held()
    time.sleep(0.5)                                                   # no refresh after that overwrites it
    assert json.loads(folder.read_bytes(LEASE))["holder"] == foreign["holder"]
    holder.release()                                                  # nor does its release delete it
    assert json.loads(folder.read_bytes(LEASE))["holder"] == foreign["holder"]
