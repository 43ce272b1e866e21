"""Variants timed each in a process of its own, in interleaved rounds.

In one process the CPU runtimes disturb each other: torch's OpenMP threads and OpenVINO's
thread pool both spin for a while after a call, so the next variant shares the two cores with
threads that have nothing to do. In one ``hrfast bench --compare`` process on the bf16 machine,
OpenVINO bf16 ran at 32.5 images/s and the torch path at 40.9; alone they ran at about 100 and
53. Here every variant is built in a worker process of its own (one at a time, so builds do not
share the cores), and the parent then asks each worker in turn for one timed call per round:
only one variant runs at any moment, and the drift of a shared machine still moves them all
alike.

A job is ``(label, factory, args)``: ``factory(*args)``, run in the worker, returns the callable
to time (no arguments) and a dict of what the parent reports (picklable: dtypes, figures)."""
from __future__ import annotations

import multiprocessing as mp
import time
from typing import Callable, List, Sequence, Tuple

import torch
from tqdm import tqdm

from .measure import median

Job = Tuple[str, Callable, tuple]


def inference_job(config: str, batch: int, name: str, seed: int = 0):
    """Variant ``name`` of ``config`` (random weights from ``seed``, as every worker has) on a
    random CPU batch: :func:`~hrfast.benchmarking.variants.timed_variant`."""
    from ..models import build_model
    from .variants import timed_variant
    torch.manual_seed(seed)
    model = build_model(config).eval()
    w, h = model.input_size
    return timed_variant(model, name, "cpu", torch.randn(batch, 3, h, w))


def _serve(conn, factory: Callable, args: tuple, threads: int) -> None:
    """The worker: build the job, report, then time one call per "run" until "stop"."""
    torch.set_num_threads(threads)
    try:
        fn, info = factory(*args)
        conn.send(info)
        while conn.recv() == "run":
            t0 = time.perf_counter()
            fn()
            conn.send(time.perf_counter() - t0)
    except Exception as e:          # reported to the parent, which names the variant
        conn.send({"error": f"{type(e).__name__}: {e}"})
    finally:
        conn.close()


def _start(ctx, job: Job):
    label, factory, args = job
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(child, factory, args, torch.get_num_threads()), daemon=True,
                       name=f"hrfast bench: {label}")
    proc.start()
    child.close()
    try:
        info = parent.recv()
    except EOFError:
        proc.join(5)
        info = {"error": f"the worker died (exit code {proc.exitcode})"}
    if "error" in info:
        proc.join(5)
        raise RuntimeError(f"variant {label!r}: {info['error']}")
    return proc, parent, info


def _stop(workers) -> None:
    for proc, conn, _ in workers:
        try:
            conn.send("stop")
        except OSError:
            pass
        proc.join(10)
        if proc.is_alive():
            proc.kill()


def _context():
    """Workers forked from a fork server that has imported hrfast once (and started no thread
    pool), so each starts in a fraction of a second; spawned where there is no fork server."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def time_isolated(jobs: Sequence[Job], iters: int = 5, progress: bool = False) -> Tuple[List[dict], List[float]]:
    """Each job in a process of its own (this process's thread count), built one after
    another, then timed in ``iters`` interleaved rounds. Returns the jobs' info dicts, each
    with its ``variant`` label, and the median seconds per call of each."""
    ctx = _context()
    workers = []
    try:
        for job in jobs:
            if progress:
                print(f"  {job[0]}: build and first call (own process) ...", flush=True)
            workers.append(_start(ctx, job))
        times = [[] for _ in workers]
        rounds = tqdm(range(iters), desc="  timed rounds", leave=False) if progress else range(iters)
        for _ in rounds:
            for (label, _, _), (_, conn, _), t in zip(jobs, workers, times):
                conn.send("run")
                sec = conn.recv()
                if isinstance(sec, dict):
                    raise RuntimeError(f"variant {label!r}: {sec['error']}")
                t.append(sec)
    finally:
        _stop(workers)
    rows = [{"variant": label, **info} for (label, _, _), (_, _, info) in zip(jobs, workers)]
    return rows, [median(t) for t in times]
