"""`conveyor log compact|migrate`: keep the prediction log small, and move the old tables in."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.config import ProjectConfig

__all__ = ["LOG_LEASE", "compact_log", "migrate_log"]

LOG_LEASE = "prediction-log"  # one compactor at a time: two would merge the same small files
_LEASE_TTL_S = 3600.0


def compact_log(config: ProjectConfig, *, wait: bool = False) -> dict[str, Any]:
    """Compact each day partition's small files, then apply ``serve.log.retain`` and
    ``serve.log.max_gb``; returns what was done.

    Raises:
        StoreBusy: another compaction holds the lease and ``wait`` is false.
    """
    from conveyor.store.leases import StoreLease
    from conveyor.store.predictionlog.files import LogFiles
    from conveyor.store.predictionlog.layout import log_url
    from conveyor.store.predictionlog.maintenance import apply_retention, compact
    from conveyor.store.stores import open_stores

    settings = config.serve.log
    files = LogFiles(log_url(config.artifacts_url()))
    with open_stores(config) as stores:
        lease = StoreLease(stores.metadata, LOG_LEASE, ttl=_LEASE_TTL_S).acquire(wait=wait)
        try:
            merged = compact(files)
            kept = apply_retention(
                files,
                retain_seconds=float(settings.retain),
                max_bytes=None if settings.max_gb is None else int(settings.max_gb * 1e9),
            )
        finally:
            lease.release()
    return {
        "folders_compacted": merged.folders,
        "files_merged": merged.files_in,
        "files_written": merged.files_out,
        "rows_moved": merged.rows,
        "days_deleted": kept.days_deleted,
        "bytes_deleted": kept.bytes_deleted,
    }


def migrate_log(config: ProjectConfig) -> dict[str, int]:
    """Move the rows of the metadata store's old ``request_log`` and ``feedback`` tables into
    the prediction log (idempotent: a second run finds nothing to move)."""
    from conveyor.gateway.logtables import migrate_tables
    from conveyor.store.predictionlog.query import log_of
    from conveyor.store.stores import open_stores

    with open_stores(config) as stores:
        requests, labels = migrate_tables(stores.metadata, log_of(stores.metadata))
    return {"requests": requests, "labels": labels}
