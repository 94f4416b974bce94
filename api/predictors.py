"""Loaded models for ``POST /v1/models/{id}/predict``: a small LRU cache and the one thread that runs them.

The cache is keyed by ``model_version_id``. A version's weights never change
once stored, so a cached entry can never be stale: promotion and rollback move
the champion alias to another id, and a request names the id it wants.

Forward passes run on a single dedicated thread (``PredictorCache.submit``),
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
        self.hits = 0
        self.misses = 0

    def submit(self, fn: Callable[..., T], /, *args: Any) -> asyncio.Future[T]:
        """Run ``fn(*args)`` on the torch thread; await the result from the event loop."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="forecaster-torch",
                                                    initializer=_configure_torch)
            executor = self._executor
        return asyncio.get_running_loop().run_in_executor(executor, fn, *args)

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
