"""One way to open a project's stores: the metadata database and the artifact store together.

Every surface (the actions, the pipeline's context, the controller, the gateway) needs both, at
the URLs its configuration resolves, closed together when it is done. ``store/`` knows nothing of
conveyor.yaml, so the configuration is anything that can name the two URLs; the registry, which
sits above the store, is wrapped around an open ``Stores`` by its callers.
"""

from __future__ import annotations

from typing import Protocol

from conveyor.store.artifacts import ArtifactStore
from conveyor.store.metadata import Store
from conveyor.store.predictionlog.layout import attach, log_url


class StoreLocations(Protocol):
    """Where a project keeps its stores: what ``ProjectConfig`` answers, made absolute."""

    def store_url(self) -> str: ...

    def artifacts_url(self) -> str: ...


class Stores:
    """A project's open metadata store, and its artifact store, opened on first use.

    The artifact store is opened only when asked for, so reading runs or events never creates
    the artifact folder, nor connects to a remote one. ``close()`` closes what was opened.
    """

    def __init__(self, metadata: Store, artifacts: ArtifactStore) -> None:
        """Hold stores; the caller opened ``metadata``, ``artifacts`` opens on first use."""
        self.metadata = metadata
        self._artifacts = artifacts
        self._artifacts_open = False

    @property
    def artifacts(self) -> ArtifactStore:
        """The artifact store, opened the first time it is asked for.

        Raises:
            ArtifactError: it cannot be opened (a folder that cannot be created, a remote
                store that refuses the connection).
        """
        if not self._artifacts_open:
            self._artifacts.open()
            self._artifacts_open = True
        return self._artifacts

    def close(self) -> None:
        if self._artifacts_open:
            self._artifacts.close()
            self._artifacts_open = False
        self.metadata.close()

    def __enter__(self) -> Stores:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_stores(config: StoreLocations, *, read_timeout_s: float | None = None) -> Stores:
    """Open the metadata store of a project (migrating it if needed); its artifact store opens
    on first use.

    Use as ``with open_stores(config) as stores:``; ``stores.metadata`` and
    ``stores.artifacts`` are then open until the block ends.

    Args:
        config: the project's configuration, or anything with ``store_url()`` and
            ``artifacts_url()``.
        read_timeout_s: give up on an artifact read after this many seconds (ArtifactTimeout)
            rather than block on a FIFO or a hung mount; for long-lived readers such as the
            gateway. None waits as long as the file system does.

    Raises:
        StoreError: the metadata database cannot be reached or migrated.
    """
    # Described here, opened on first use.
    artifacts = ArtifactStore(config.artifacts_url(), read_timeout_s=read_timeout_s)
    metadata = Store(config.store_url()).open()
    # The prediction log lives under the artifact store; its readers are handed the metadata
    # store (monitoring windows, release analysis), so they find the log through it.
    attach(metadata, log_url(config.artifacts_url()))
    return Stores(metadata, artifacts)
