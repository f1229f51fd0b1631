"""Scale-out on Ray: shard dataset-level work over workers that each hold one model replica."""
from .pool import WorkerError, WorkerPool

__all__ = ["WorkerPool", "WorkerError"]
