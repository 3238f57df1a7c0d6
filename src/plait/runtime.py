"""Process-wide tuning shared by `plait serve`, `plait worker` and the benchmarks."""

import gc

# Set by `plait serve` when it runs several processes: each then writes its metric
# samples to files in this directory, and /metrics adds them up (prometheus_client reads
# it when first imported, so it is named here, away from plait.observability).
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def tune_gc() -> None:
    """Collect the young generation every 100,000 allocations instead of 700.

    Ingestion and the pipeline allocate a dict per message and a few per field; at the
    default threshold the collector ran every few messages and its full passes walked
    every live object (measured: pipeline 7,300 -> 10,300 events/s). What is alive at
    start (modules, settings) is frozen out of the collections altogether.
    """
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
