"""What `forecaster train` and `forecaster models list` print: what each version serves and its
holdout MASE, the recurrent model's beside it, and a coverage only where the interval serves.

Real processes on a real SQLite file; tiny trainings (a few epochs, one statistical candidate).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# A clean daily cycle: seasonal AutoETS beats a 2-epoch network on validation and serves.
SEASONAL = ('key = "sine:demo"\nsource = "sine"\nfrequency = "1h"\n'
            'params = { period = 24, noise = 0.1, length = 400, seed = 1 }\n'
            'model = { epochs = 2, hidden_size = 8, candidates = ["ets_seasonal"] }\n')
# A noiseless cycle, the model alone: validation chooses the seasonal naive, so the version is rejected
# and the baseline fallback serves.
BASELINE_WINS = ('key = "sine:pure"\nsource = "sine"\nfrequency = "1h"\n'
                 'params = { period = 24, noise = 0.0, length = 300 }\n'
                 'model = { epochs = 1, hidden_size = 4, candidates = [] }\n')


def cli(config: Path, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "forecaster.cli", "--config", str(config), *args],
                         check=False, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def rows(table: str) -> list[dict[str, str]]:
    """The rows of a rich table as {header: cell} (a wrapped cell's lines joined by spaces)."""
    lines = table.splitlines()
    header = next(line for line in lines if "┃" in line)
    names = [c.strip() for c in header.strip().strip("┃").split("┃")]
    found: list[dict[str, str]] = []
    for line in lines:
        if not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if cells[0] or not found:  # a new row starts with its first cell; blank first cell: a wrapped line
            found.append(dict(zip(names, cells, strict=True)))
        else:
            for name, cell in zip(names, cells, strict=True):
                found[-1][name] = f"{found[-1][name]} {cell}".strip()
    return found


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A config and what `forecaster train` printed for both series."""
    tmp = tmp_path_factory.mktemp("tables")
    config = tmp / "forecaster.toml"
    config.write_text(f'database_url = "sqlite:///{tmp / "f.db"}"\napi_keys = ["k"]\n\n'
                      f"[[series]]\n{SEASONAL}\n[[series]]\n{BASELINE_WINS}", encoding="utf-8")
    cli(config, "migrate")
    cli(config, "ingest")
    return config, cli(config, "train")


def test_the_train_table_shows_what_serves_and_its_mase_beside_the_models(trained: tuple[Path, str]) -> None:
    _, table = trained
    demo = {r["series"]: r for r in rows(table)}["sine:demo"]
    # the path's choice first; its step 1 may be chosen apart ("seasonal AutoETS; step 1 ...")
    assert demo["status"] == "promoted" and demo["serves"].split(";")[0] == "seasonal AutoETS", demo
    assert float(demo["MASE"]) < float(demo["seasonal"]) < float(demo["model"])  # the model lost; ETS serves
    assert demo["coverage"].endswith("%")  # the promoted version's interval is what a user gets
    assert "interval of what serves" in table


def test_a_rejected_version_shows_no_coverage(trained: tuple[Path, str]) -> None:
    _, table = trained
    pure = {r["series"]: r for r in rows(table)}["sine:pure"]
    assert (pure["status"], pure["serves"], pure["coverage"]) == ("rejected", "seasonal naive", "-")
    assert float(pure["MASE"]) < float(pure["model"])
    assert "sine:pure: model MASE" in table and "the baseline fallback serves it" in table


def test_models_list_agrees_with_the_train_table(trained: tuple[Path, str]) -> None:
    config, table = trained
    in_train = {r["series"]: r for r in rows(table)}
    for key, version in (("sine:demo", "v1 *"), ("sine:pure", "v1")):
        (listed,) = rows(cli(config, "models", "list", key))
        trained_row = in_train[key]
        assert listed["version"] == version
        assert [listed[c] for c in ("serves", "MASE", "model", "naive", "seasonal", "coverage")] == [
            trained_row[c] for c in ("serves", "MASE", "model", "naive", "seasonal", "coverage")]
