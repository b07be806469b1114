"""Store benchmark: the Redis backend against a real redis-server this benchmark starts itself (free loopback port,
temporary directory, ``--save '' --appendonly no``) and the local backend, in one run.

- enrol -> searchable on another process: this process enrols one person at a time through its store; a second
  process polls ``persons.sync()`` + ``search`` through its own store every ``--poll-ms`` until the new face is
  its top hit. Latency = from the start of ``add_person`` to the poll that found it (CLOCK_MONOTONIC, one host).
- match_or_create per second from 4 processes, each with its own store, on noisy faces of a pool of strangers.
- replica cold start from N faces (``--cold-faces``, default 1,000,000 x 128): the faces are written through the
  public ``add_person`` in batches of ``--batch`` faces per person; then a fresh ``open_store`` is timed up to
  the first search it answers (the snapshot read plus the exact index it serves from at once), then until its
  background HNSW build (above ``gallery.hnsw_above``) is swapped in; and again with an exact index only.
  ``--only cold`` runs just this part (Redis only: no local copy, no enrol / match_or_create / memory runs).
- Redis memory per face: INFO used_memory delta / faces, for those cold faces (a 16x16 crop: the floor) and for
  ``--real-faces`` faces with a real 150x150 face crop (the astronaut portrait).
- search latency, one query at a time, on the Redis replica vs the local backend holding the same faces.

Run: argusnet bench store --json out/bench-store.json [--cold-faces 1000000] [--only cold]
"""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import redis

from argusnet.launcher import free_port
from bench.common import emit, parser, summary_ms
from bench.search import synthetic, unit
from store import open_store
from store.config import GalleryConfig, LocalStoreConfig, RedisStoreConfig, StoreConfig
from store.types import FaceSample

MODEL = "bench_synthetic"
DIM = 128
START_TIMEOUT_S = 10.0
FOUND_TIMEOUT_S = 10.0
PEER_TIMEOUT_S = 120.0
HNSW_TIMEOUT_S = 3600.0  # how long the cold start waits for the background HNSW build
STRANGERS = 500
MOC_THRESHOLD = 0.8  # two noisy faces of one stranger: cosine ~0.87; of two strangers: ~0
LANDMARKS = np.array([[38, 52], [74, 52], [56, 72], [42, 92], [70, 92]], np.float32)
TINY_CROP = np.full((16, 16, 3), 128, np.uint8)


@dataclass(frozen=True)
class RedisServer:
    process: subprocess.Popen
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def used_memory(self) -> int:
        client = redis.Redis(port=self.port, socket_timeout=30)
        try:
            return int(client.info("memory")["used_memory"])
        finally:
            client.close()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_redis() -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("bench store: redis-server is not installed (apt-get install redis-server)")
    directory, port = Path(tempfile.mkdtemp(prefix="bench-redis-")), free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
                                "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    server = RedisServer(process, port, directory)
    client = redis.Redis(port=port, socket_timeout=1.0, socket_connect_timeout=1.0)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if client.ping():
                    return server
            except redis.ConnectionError:
                time.sleep(0.05)
    finally:
        client.close()
    server.stop()
    raise SystemExit(f"bench store: redis-server did not start on port {port}")


# ----- configs travel to child processes as JSON ----------------------------------------------------------
def cfg_json(cfg: StoreConfig) -> str:
    return cfg.model_dump_json()


def cfg_from_json(text: str) -> StoreConfig:
    data = json.loads(text)
    return RedisStoreConfig(**data) if data["type"] == "redis" else LocalStoreConfig(**data)


def send(conn: Any, obj: Any) -> None:
    conn.send_bytes(json.dumps(obj).encode())


def recv(conn: Any, timeout: float = PEER_TIMEOUT_S) -> Any:
    if not conn.poll(timeout):
        raise TimeoutError(f"no message from the peer process within {timeout} s")
    return json.loads(conn.recv_bytes())


def face(embedding: np.ndarray, crop: np.ndarray = TINY_CROP, source: str = "bench") -> FaceSample:
    return FaceSample(embedding, crop, LANDMARKS, source)


def enrol_vector(i: int) -> np.ndarray:
    return unit(np.random.default_rng(10_000 + i).standard_normal((1, DIM), dtype=np.float32))[0]


def percentiles_ms(seconds: Sequence[float]) -> dict[str, float | int]:
    ms = np.asarray(seconds, np.float64) * 1000.0
    if not len(ms):
        return {"runs": 0}
    return {"p50": round(float(np.percentile(ms, 50)), 3), "p99": round(float(np.percentile(ms, 99)), 3),
            "max": round(float(ms.max()), 3), "runs": int(len(ms))}


def real_crop() -> np.ndarray:
    """A real aligned-size face crop: 150x150 around the astronaut's face (scikit-image, public domain)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[20:170, 165:315])


# ----- enrol -> searchable on another process --------------------------------------------------------------
def poller_process(cfg_text: str, count: int, poll_s: float, conn: Any) -> None:
    store = open_store(cfg_from_json(cfg_text), GalleryConfig())
    try:
        send(conn, {"ready": True})
        for i in range(count):
            target, name, start = enrol_vector(i)[None], f"enrol-{i}", time.monotonic()
            while True:
                store.persons.sync()
                hits = store.persons.search(target, 1)[0]
                if hits and hits[0].name == name:
                    send(conn, {"i": i, "t": time.monotonic()})
                    break
                if time.monotonic() - start > FOUND_TIMEOUT_S:
                    send(conn, {"i": i, "t": None})
                    break
                time.sleep(poll_s)
    finally:
        store.close()


def enrol_latency(cfg: StoreConfig, count: int, base: int, poll_s: float) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    store = open_store(cfg, GalleryConfig(), MODEL, DIM, create=True)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    poller = ctx.Process(target=poller_process, args=(cfg_json(cfg), count, poll_s, child))
    latencies, enrol_s, missed = [], [], 0
    try:
        store.persons.add_person("base", [face(v) for v in unit(rng.standard_normal((base, DIM), np.float32))])
        poller.start()
        recv(parent)
        for i in range(count):
            time.sleep(float(rng.uniform(0.0, 0.02)))  # enrolments land at every phase of the poll loop
            t0 = time.monotonic()
            store.persons.add_person(f"enrol-{i}", [face(enrol_vector(i))])
            enrol_s.append(time.monotonic() - t0)
            found = recv(parent)["t"]
            if found is None:
                missed += 1
            else:
                latencies.append(found - t0)
    finally:
        poller.join(PEER_TIMEOUT_S)
        if poller.is_alive():
            poller.kill()
            poller.join()
        store.close()
    return {"enrolments": count, "base_faces": base, "poll_ms": poll_s * 1000.0, "not_found_in_10s": missed,
            "latency_ms": percentiles_ms(latencies), "add_person_ms": percentiles_ms(enrol_s)}


# ----- match_or_create from several processes ---------------------------------------------------------------
def stranger_centres() -> np.ndarray:
    return unit(np.random.default_rng(7).standard_normal((STRANGERS, DIM), dtype=np.float32))


def moc_process(cfg_text: str, seed: int, seconds: float, conn: Any) -> None:
    store = open_store(cfg_from_json(cfg_text), GalleryConfig())
    rng, centres = np.random.default_rng(seed), stranger_centres()
    ops, created, seen, times = 0, 0, set(), []
    try:
        send(conn, {"ready": True})
        recv(conn)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            j = int(rng.integers(STRANGERS))
            vector = unit(centres[j:j + 1] + 0.035 * rng.standard_normal((1, DIM), dtype=np.float32))[0]
            t0 = time.monotonic()
            match = store.visitors.match_or_create([face(vector)], MOC_THRESHOLD, 5)
            times.append(time.monotonic() - t0)
            ops, created = ops + 1, created + int(match.created)
            seen.add(j)
        send(conn, {"ops": ops, "created": created, "seen": sorted(seen), "ms": percentiles_ms(times)})
    finally:
        store.close()


def match_or_create_rate(cfg: StoreConfig, processes: int, seconds: float) -> dict[str, Any]:
    store = open_store(cfg, GalleryConfig(), MODEL, DIM, create=True)
    ctx = mp.get_context("spawn")
    pipes = [ctx.Pipe() for _ in range(processes)]
    procs = [ctx.Process(target=moc_process, args=(cfg_json(cfg), 100 + i, seconds, child))
             for i, (_, child) in enumerate(pipes)]
    try:
        for proc in procs:
            proc.start()
        for parent, _ in pipes:
            recv(parent)
        for parent, _ in pipes:
            send(parent, {"go": True})
        results = [recv(parent, PEER_TIMEOUT_S + seconds) for parent, _ in pipes]
        visitors = len(store.visitors.list())
        racing = raced_duplicates(store.visitors.all_faces())
    finally:
        for proc in procs:
            proc.join(PEER_TIMEOUT_S)
            if proc.is_alive():
                proc.kill()
                proc.join()
        store.close()
    ops = sum(r["ops"] for r in results)
    strangers = len(set().union(*(r["seen"] for r in results)))
    return {"processes": processes, "seconds": seconds, "calls": ops, "per_s": round(ops / seconds, 1),
            "per_process_ms": [r["ms"] for r in results], "strangers_seen": strangers, "visitors_minted": visitors,
            "created_calls": sum(r["created"] for r in results), "duplicates_at_or_above_threshold": racing}


def raced_duplicates(faces: list) -> int:
    """Visitors of one stranger (nearest centre) whose faces match each other at the threshold: what a
    non-atomic match_or_create would leave. Duplicates below it are noise (a face that matched no kept face)."""
    centres = stranger_centres()
    groups: dict[int, list[tuple[str, np.ndarray]]] = {}
    for f in faces:
        groups.setdefault(int(np.argmax(centres @ f.embedding)), []).append((f.person, f.embedding))
    raced = 0
    for members in groups.values():
        for i, (a, va) in enumerate(members):
            raced += sum(1 for b, vb in members[i + 1:] if a != b and float(va @ vb) >= MOC_THRESHOLD)
    return raced


# ----- cold start, memory, search ---------------------------------------------------------------------------
def write_faces(cfg: StoreConfig, gallery: GalleryConfig, vectors: np.ndarray, batch: int, crop: np.ndarray,
                per_person: int | None = None) -> float:
    """``vectors`` through add_person, ``batch`` faces per call (one person each, or ``per_person``); seconds."""
    step = per_person or batch
    store = open_store(cfg, gallery, MODEL, DIM, create=True)
    try:
        t0 = time.perf_counter()
        for start in range(0, len(vectors), step):
            store.persons.add_person(f"p{start // step}", [face(v, crop) for v in vectors[start:start + step]])
        return time.perf_counter() - t0
    finally:
        store.close()


def timed_open(cfg: StoreConfig, gallery: GalleryConfig) -> tuple[Any, float]:
    t0 = time.perf_counter()
    store = open_store(cfg, gallery, MODEL, DIM)
    return store, time.perf_counter() - t0


def search_one_at_a_time(store: Any, probes: np.ndarray) -> tuple[list[str], list[float]]:
    names, times = [], []
    for i in range(len(probes)):
        t0 = time.perf_counter()
        hits = store.persons.search(probes[i:i + 1], 1)[0]
        times.append(time.perf_counter() - t0)
        names.append(hits[0].name if hits else "")
    return names, times


def memory_per_face(server: RedisServer, count: int) -> dict[str, Any]:
    """used_memory delta per face for ``count`` faces with a real 150x150 crop, 4 faces per person."""
    cfg = RedisStoreConfig(url=server.url, prefix="memreal")
    vectors = unit(np.random.default_rng(3).standard_normal((count, DIM), dtype=np.float32))
    before = server.used_memory()
    seconds = write_faces(cfg, GalleryConfig(), vectors, 4, real_crop(), per_person=4)
    delta = server.used_memory() - before
    return {"faces": count, "faces_per_person": 4, "crop": "150x150 RGB, JPEG q95 as stored",
            "bytes_per_face": round(delta / count), "write_s": round(seconds, 2)}


def cold_exact_only(server: RedisServer, size: int, batch: int, queries: int) -> dict[str, Any]:
    """``--cold-index exact``: write, memory and an exact-index cold start of the Redis replica only (no HNSW
    build, no local copy), for sizes whose HNSW builds do not fit the time."""
    gallery, probes = synthetic(size, queries, DIM, seed=0)
    cfg, exact_cfg = RedisStoreConfig(url=server.url, prefix="cold", socket_timeout_s=120.0), \
        GalleryConfig(hnsw_above=size + 1)
    before = server.used_memory()
    write_s = write_faces(cfg, exact_cfg, gallery, batch, TINY_CROP)
    delta = server.used_memory() - before
    replica, open_s = timed_open(cfg, exact_cfg)
    try:
        _, replica_ms = search_one_at_a_time(replica, probes)
    finally:
        replica.close()
    return {"faces": size, "dim": DIM, "faces_per_add_person": batch, "queries": queries,
            "redis": {"write_s": round(write_s, 1), "write_faces_per_s": round(size / write_s),
                      "bytes_per_face": round(delta / size), "crop": "16x16 flat (the floor)",
                      "cold_start_exact_s": round(open_s, 2), "search_exact_ms": summary_ms([t * 1e3 for t in
                                                                                         replica_ms])}}


def cold_start(cfg: StoreConfig, probe: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """A fresh replica with the default gallery config: seconds to the first search answered (and its index), to
    the open, and until its index is HNSW (None when it never became HNSW: a gallery below ``hnsw_above``)."""
    t0 = time.perf_counter()
    store = open_store(cfg, GalleryConfig(), MODEL, DIM)
    open_s = time.perf_counter() - t0
    first_kind = store.persons.index_kind
    store.persons.search(probe, 1)
    first_s = time.perf_counter() - t0
    hnsw_s = None
    if store.persons.face_count > GalleryConfig().hnsw_above:
        deadline = time.monotonic() + HNSW_TIMEOUT_S
        while store.persons.index_kind != "hnsw" and time.monotonic() < deadline:
            time.sleep(0.05)
        hnsw_s = round(time.perf_counter() - t0, 2) if store.persons.index_kind == "hnsw" else None
    return store, {"cold_start_s": round(first_s, 2), "cold_start_open_s": round(open_s, 2),
                   "cold_start_index": first_kind, "time_to_hnsw_s": hnsw_s}


def cold_redis(server: RedisServer, gallery: np.ndarray, probes: np.ndarray, batch: int) -> tuple[dict, list[str]]:
    """Write ``gallery`` into Redis, open it exact, then cold-start a default replica and search on it."""
    size = len(gallery)
    redis_cfg = RedisStoreConfig(url=server.url, prefix="cold", socket_timeout_s=120.0)
    before = server.used_memory()
    redis_write_s = write_faces(redis_cfg, GalleryConfig(hnsw_above=size + 1), gallery, batch, TINY_CROP)
    delta = server.used_memory() - before
    exact, exact_s = timed_open(redis_cfg, GalleryConfig(hnsw_above=size + 1))
    exact.close()
    replica, cold = cold_start(redis_cfg, probes[:1])
    try:
        replica_names, replica_ms = search_one_at_a_time(replica, probes)
        kind = replica.persons.index_kind
    finally:
        replica.close()
    return {"write_s": round(redis_write_s, 1), "write_faces_per_s": round(size / redis_write_s),
            "bytes_per_face": round(delta / size), "crop": "16x16 flat (the floor)", **cold,
            "cold_start_exact_s": round(exact_s, 2), "search_index": kind,
            "search_ms": summary_ms([t * 1e3 for t in replica_ms]),
            "search_ms_p99": percentiles_ms(replica_ms)["p99"]}, replica_names


def cold_and_search(server: RedisServer, local_dir: Path | None, size: int, batch: int,
                    queries: int) -> dict[str, Any]:
    """The Redis cold start and search; with ``local_dir``, the same faces in the local backend too."""
    gallery, probes = synthetic(size, queries, DIM, seed=0)
    redis_result, replica_names = cold_redis(server, gallery, probes, batch)
    if local_dir is None:
        return {"faces": size, "dim": DIM, "faces_per_add_person": batch, "queries": queries, "redis": redis_result}
    local_cfg = LocalStoreConfig(path=local_dir / "cold")
    local_write_s = write_faces(local_cfg, GalleryConfig(), gallery, batch, TINY_CROP)
    local, local_open_s = timed_open(local_cfg, GalleryConfig())
    try:
        local_names, local_ms = search_one_at_a_time(local, probes)
        local_kind = getattr(local.persons, "index_kind", "?")
    finally:
        local.close()
    agree = float(np.mean([a == b for a, b in zip(replica_names, local_names)]))
    return {"faces": size, "dim": DIM, "faces_per_add_person": batch, "redis": redis_result,
            "local": {"write_s": round(local_write_s, 1), "open_s": round(local_open_s, 2), "index": local_kind,
                      "search_ms": summary_ms([t * 1e3 for t in local_ms]),
                      "search_ms_p99": percentiles_ms(local_ms)["p99"]},
            "queries": queries, "same_top1_person": round(agree, 4)}


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--cold-faces", type=int, default=1_000_000, help="faces for the cold start (default 1,000,000)")
    p.add_argument("--batch", type=int, default=1000, help="faces per add_person call when writing them")
    p.add_argument("--enrolments", type=int, default=200)
    p.add_argument("--base-faces", type=int, default=1000, help="faces in the gallery before the enrolments")
    p.add_argument("--poll-ms", type=float, default=10.0, help="how often the other process syncs and searches")
    p.add_argument("--moc-processes", type=int, default=4)
    p.add_argument("--moc-seconds", type=float, default=5.0)
    p.add_argument("--real-faces", type=int, default=2000, help="faces with a real crop for memory per face")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--cold-index", choices=("both", "exact"), default="both",
                   help="both: the replica's cold start with its default index (HNSW above gallery.hnsw_above) and "
                   "exact, plus the local backend with the same faces; exact: only the Redis write, memory and an "
                   "exact-index cold start")
    p.add_argument("--only", choices=("all", "cold"), default="all",
                   help="cold: only the Redis replica's cold start (write, exact open, default open -> first search "
                   "-> HNSW swapped in, search), no local backend and no other measurement")
    args = p.parse_args(argv)
    if min(args.cold_faces, args.batch, args.enrolments, args.moc_processes, args.real_faces, args.queries) < 1:
        p.error("counts must be >= 1")
    server, tmp = start_redis(), Path(tempfile.mkdtemp(prefix="bench-store-"))
    try:
        result = run_all(args, server, tmp)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    emit(result, args.json)
    return 0


def run_all(args: Any, server: RedisServer, tmp: Path) -> dict[str, Any]:
    if args.only == "cold":
        cold = (cold_and_search(server, None, args.cold_faces, args.batch, args.queries)
                if args.cold_index == "both" else cold_exact_only(server, args.cold_faces, args.batch, args.queries))
        return {"benchmark": "store", "only": "cold", "cold": cold, "targets": {"cold_start_s_max": 60.0}}
    backends = {"redis": lambda name: RedisStoreConfig(url=server.url, prefix=name),
                "local": lambda name: LocalStoreConfig(path=tmp / name)}
    enrol = {b: enrol_latency(make("enrol"), args.enrolments, args.base_faces, args.poll_ms / 1000.0)
             for b, make in backends.items()}
    moc = {b: match_or_create_rate(make("moc"), args.moc_processes, args.moc_seconds) for b, make in backends.items()}
    memory = memory_per_face(server, args.real_faces)
    cold = (cold_and_search(server, tmp, args.cold_faces, args.batch, args.queries) if args.cold_index == "both"
            else cold_exact_only(server, args.cold_faces, args.batch, args.queries))
    return {"benchmark": "store", "redis_server": subprocess.run(["redis-server", "--version"], capture_output=True,
                                                                 text=True, check=False).stdout.strip(),
            "enrol_to_searchable": enrol, "match_or_create": moc, "memory_real_crop": memory, "cold": cold,
            "enrol_p99_ms": {b: r["latency_ms"].get("p99") for b, r in enrol.items()},
            "worker_sync_interval_s": _worker_sync_s(),
            "targets": {"enrol_to_searchable_p99_ms_max": 1000.0, "enrol_to_searchable_p99_ms_goal": 100.0}}


def _worker_sync_s() -> float:
    """How often a real worker calls sync() (what enrol -> searchable costs on top of the store's own latency)."""
    from gpu_worker.tracked import SYNC_S

    return SYNC_S


if __name__ == "__main__":
    raise SystemExit(main())
