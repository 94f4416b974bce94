"""A worker with --concurrency gathers its concurrent train tasks of one model shape into a fleet:
one task per series on the queue (locks unchanged), one batched training in the worker."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sqlalchemy import select

from forecaster.modelling.fleet import sizing as fleet
from forecaster.usecases import ingest
from forecaster.config.loading import load_settings
from forecaster.store.tables import ModelVersion, make_engine, make_sessionmaker
from forecaster.usecases.queue import TaskQueue
from forecaster.usecases.jobs import start_run
from tests.test_jobs_processes import migrated, write_config
from tests.test_workers import sine, wait_until, worker

pytestmark = pytest.mark.postgres

AMP = {"window": 8, "hidden_size": 8, "epochs": 2, "batch_size": 32, "amp": True, "device": "cpu"}


@pytest.mark.skipif(fleet.cpu_bf16(torch.device("cpu"), True, "lstm") is None,
                    reason="CPU fleets pay only with native bfloat16 (AVX512-BF16/AMX); this CPU has none")
def test_a_worker_trains_its_concurrent_tasks_of_one_shape_as_a_fleet(pg_url: str, tmp_path: Path) -> None:
    n = fleet.CPU_MIN_MEMBERS  # the smallest CPU group that trains as a fleet
    series = [sine(100 + i, length=120, model=AMP) for i in range(n)]
    migrated(pg_url)
    config = write_config(tmp_path / "forecaster.toml", pg_url, series)
    settings = load_settings(config)
    engine = make_engine(pg_url)
    sm = make_sessionmaker(engine)
    ingest.ingest_many(sm, settings, settings.series)
    procs: list = []
    try:
        w = worker(procs, config, "worker", "--concurrency", str(n), "--torch-threads", "1",
                   FORECASTER_WORKERS__FLEET_WAIT_S="20")
        w.wait_for(r"worker\.start", timeout_s=90)
        queue = TaskQueue(sm, settings)
        run_id = start_run(sm, settings, queue, kind="train", trigger="api").id
        queue.shutdown()

        def finished():
            from forecaster.store import jobruns

            run = jobruns.get_run(sm, run_id)
            return run if run.finished_at is not None else None

        run = wait_until(finished, 180, "the run")
        assert (run.status, run.series_done, run.series_failed) == ("ok", n, 0), run
        with sm() as session:
            sizes = [mv.lineage.get("fleet_size") for mv in session.scalars(select(ModelVersion))]
        assert len(sizes) == n  # one version per series
        assert sizes == [n] * n, sizes  # the worker's concurrent tasks trained as one fleet
        assert any(f"train.fleet size={n}" in line for _, line in w.lines), "no fleet was logged"
    finally:
        for p in procs:
            p.close()
        engine.dispose()
