"""Loaded models for ``POST /v1/models/{id}/predict``: a small LRU cache and the one thread that runs them.

The cache is keyed by ``model_version_id``. A version's weights never change
once stored, so a cached entry can never be stale: promotion and rollback move
the champion alias to another id, and a request names the id it wants.

Forward passes run on a single dedicated thread (``PredictorCache.submit``), or for a small
batch that is the only request in flight on the event loop's own thread (``run_here``),
not on the shared threadpool: torch's OpenMP thread settings belong to the
calling thread, and a team of intra-op threads per threadpool worker would
oversubscribe the CPU (measured 2-3x slower per pass on a 2-core host). One
thread with ``TORCH_THREADS`` intra-op threads serves every request in turn.
Torch is imported when that thread starts (the first predict request), never
when the API starts.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from forecaster.usecases import models
from forecaster.usecases.models import LoadedModel

T = TypeVar("T")

# Intra-op threads for one forward pass: a few, and one core fewer than the machine has.
# The batches are small (one request's windows) and the event loop needs a core too: an
# OpenMP team spread over every core stalls at its barriers whenever the loop (or a
# client on the same host) takes one of them, which measured 2-4x slower per pass.
TORCH_THREADS = max(1, min(4, (os.cpu_count() or 1) - 1))
INLINE_WINDOWS = 256  # a pass over at most this many windows may run on the event loop when nothing waits


def _configure_torch() -> None:
    """Runs once on the torch thread: import torch there and set its intra-op threads."""
    import torch

    torch.set_num_threads(min(torch.get_num_threads(), TORCH_THREADS))


class PredictorCache:
    """Thread-safe LRU of ``LoadedModel`` by model_version_id (``size`` entries at most)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[int, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._pending = 0  # passes handed to the torch thread and not back yet (counted on the event loop)
        self._here = False  # whether the event loop's thread has torch's thread settings too
        self.hits = 0
        self.misses = 0

    def submit(self, fn: Callable[..., T], /, *args: Any) -> asyncio.Future[T]:
        """Run ``fn(*args)`` on the torch thread; await the result from the event loop."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="forecaster-torch",
                                                    initializer=_configure_torch)
            executor = self._executor
        future = asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        self._pending += 1
        future.add_done_callback(self._back)
        return future

    def _back(self, _: object) -> None:
        self._pending -= 1

    def run_here(self, model_version_id: int, windows: int) -> bool:
        """Whether a pass may run on the calling event loop's thread instead of the torch thread, and if so
        readies that thread: a loaded model, at most ``INLINE_WINDOWS`` windows (~2 ms of one core), the
        torch thread started (torch imported) and holding no pass. The two hand-offs a pass on the torch
        thread costs are then saved: ~1 ms where idle CPUs wake slowly (bench/results/api.md)."""
        if windows > INLINE_WINDOWS or self._pending or self._executor is None or model_version_id not in self._items:
            return False
        if not self._here:
            _configure_torch()  # torch's intra-op threads are set per calling thread
            self._here = True
        return True

    def close(self) -> None:
        """Drop every model and stop the torch thread (after the pass it is running)."""
        self.clear()
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def __len__(self) -> int:
        return len(self._items)

    def cached(self, model_version_id: int) -> LoadedModel | None:
        """The model for ``model_version_id`` if it is loaded (a hit), else None (nothing counted)."""
        with self._lock:
            item = self._items.get(model_version_id)
            if item is not None:
                self._items.move_to_end(model_version_id)
                self.hits += 1
            return item

    def get(self, session: Session, model_version_id: int) -> LoadedModel:
        """The model for ``model_version_id``, loaded from the database on a miss.

        Raises:
            ModelNotFound: naming the id.
        """
        item = self.cached(model_version_id)
        if item is not None:
            return item
        with self._lock:
            self.misses += 1
        item = self._load(session, model_version_id)  # outside the lock: a load reads the database
        with self._lock:
            self._items[model_version_id] = item
            self._items.move_to_end(model_version_id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return item

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    @staticmethod
    def _load(session: Session, model_version_id: int) -> LoadedModel:
        return models.load_model(session, model_version_id=model_version_id)
