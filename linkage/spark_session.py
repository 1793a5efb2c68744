"""The Spark session for hub person linkage on Spark (linkage.spark_linkage): local mode or a
cluster, configured from the environment, one checkpoint folder per run on hub storage."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def spark_session(
    *,
    cores: int = 2,
    shuffle_partitions: int = 4,
    driver_memory: str = "4g",
    checkpoint_dir: str | Path | None = None,
    app_name: str = "joinedup-linkage",
    master: str | None = None,
) -> Any:
    """A SparkSession: local mode on `cores` by default, or the cluster at `master`
    (e.g. "spark://host:7077"). Splink writes intermediate tables to the checkpoint dir,
    which must be hub storage (shared storage on a cluster)."""
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master(master or f"local[{cores}]")
        .appName(app_name)
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.default.parallelism", str(shuffle_partitions))
        .config("spark.driver.memory", driver_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    ckpt = Path(checkpoint_dir or tempfile.mkdtemp(prefix="joinedup-spark-"))
    spark.sparkContext.setCheckpointDir(str(ckpt))
    return spark


@dataclass(frozen=True)
class SparkConfig:
    """Where and how the hub's link stage runs on Spark (see `from_env`)."""

    work_dir: Path  # hub storage (shared storage on a cluster): input export, checkpoints
    master: str | None = None  # None: local mode on `cores`
    cores: int = 2
    shuffle_partitions: int = 4
    driver_memory: str = "4g"
    break_lineage_method: str | None = None  # Splink's; None = parquet under the checkpoint

    @classmethod
    def from_env(cls, hub_dir: str | Path) -> SparkConfig:
        """JOINEDUP_SPARK_MASTER (e.g. spark://host:7077; unset: local mode),
        JOINEDUP_SPARK_DIR (default <hub>/spark), JOINEDUP_SPARK_CORES,
        JOINEDUP_SPARK_PARTITIONS, JOINEDUP_SPARK_DRIVER_MEMORY, JOINEDUP_SPARK_BREAK_LINEAGE."""
        env = os.environ

        def number(name: str, default: int) -> int:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            if not raw.isdigit() or int(raw) < 1:
                raise ValueError(
                    f"environment variable {name}: {raw!r} is not a positive whole number"
                )
            return int(raw)

        return cls(
            master=env.get("JOINEDUP_SPARK_MASTER", "").strip() or None,
            work_dir=Path(env.get("JOINEDUP_SPARK_DIR", "").strip() or Path(hub_dir) / "spark"),
            cores=number("JOINEDUP_SPARK_CORES", cls.cores),
            shuffle_partitions=number("JOINEDUP_SPARK_PARTITIONS", cls.shuffle_partitions),
            driver_memory=env.get("JOINEDUP_SPARK_DRIVER_MEMORY", "").strip() or cls.driver_memory,
            break_lineage_method=env.get("JOINEDUP_SPARK_BREAK_LINEAGE", "").strip() or None,
        )


def _run_folder(run_id: str) -> str:
    # Hadoop paths refuse ':' (Airflow run ids have them); the hash keeps names distinct.
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)
    return f"{safe}-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}"


@contextmanager
def configured_session(config: SparkConfig, run_id: str) -> Iterator[Any]:
    """The SparkSession for one run: the caller's active session if there is one (left
    running), else a new one from `config`, stopped afterwards with its checkpoint folder
    (under the hub's work dir) removed."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    ckpt = Path(config.work_dir) / "checkpoint" / _run_folder(run_id)
    spark = spark_session(
        cores=config.cores,
        shuffle_partitions=config.shuffle_partitions,
        driver_memory=config.driver_memory,
        checkpoint_dir=ckpt,
        master=config.master,
    )
    try:
        yield spark
    finally:
        spark.stop()
        shutil.rmtree(ckpt, ignore_errors=True)
