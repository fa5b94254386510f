"""Long-lived resources that policies share within one runtime.

Several consumer groups may each have an `audit-logger` in their chain; they must
all feed one writer per sink, or two writers would interleave one hash chain. The
runtime owns one `PolicyResources`, hands it to every policy's `start`, and closes
it (draining the audit queues) when the runtime is retired.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Callable, Hashable

from ktproxy.audit.sink import AuditSink
from ktproxy.audit.writer import AuditWriter
from ktproxy.fleet.pseudonyms import MemoryPseudonyms, PseudonymVault

log = logging.getLogger("ktproxy.audit")


def default_instance() -> str:
    """This process's name in audit chains: host name and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


_worker_slot: int | None = None


def set_worker_slot(slot: int) -> None:
    """Called in a forked worker (`--workers N`) with its slot, 0..N-1; a replacement
    worker gets the slot of the one it replaces."""
    global _worker_slot
    _worker_slot = slot


def instance_name(configured: str | None) -> str:
    """The audit chain this process writes: `gateway.instance` (with `-w<slot>` in a
    worker, since two processes must never extend one chain at once, while a
    replacement continues its predecessor's), else host name and process id."""
    if configured is None:
        return default_instance()
    return configured if _worker_slot is None else f"{configured}-w{_worker_slot}"


class PolicyResources:
    """Writers (and later connections) shared by the policies of one runtime."""

    def __init__(self, instance: str | None = None) -> None:
        self.instance = instance_name(instance)
        self._writers: dict[tuple[str, str], AuditWriter] = {}
        # The state backend's vault, set before a runtime's policies start (they keep
        # the one they started with, so a reload to another backend leaves the old
        # runtime's requests on the old vault).
        self.pseudonyms: PseudonymVault = MemoryPseudonyms()
        # Opened audit stores the admin API reads (PostgreSQL: one connection kept, not
        # one per console poll); used from worker threads, hence the lock.
        self._readers: dict[Hashable, AuditSink] = {}
        self._readers_lock = threading.Lock()

    async def audit_writer(
        self, kind: str, path: str, make: Callable[[], AuditWriter]
    ) -> AuditWriter:
        """The started writer of sink `kind` at `path`, made by `make` the first time."""
        key = (kind, os.path.abspath(path))
        writer = self._writers.get(key)
        if writer is None:
            writer = make()
            await writer.start()
            self._writers[key] = writer
        return writer

    @property
    def audit_writers(self) -> list[AuditWriter]:
        """Every audit writer (for metrics and admin endpoints)."""
        return list(self._writers.values())

    def audit_reader(self, key: Hashable, make: Callable[[], AuditSink]) -> AuditSink:
        """The opened reading sink for `key`, made and opened by `make` the first time
        (blocking: call it from a worker thread). A sink that fails to open is not kept,
        so the next call tries again."""
        with self._readers_lock:
            reader = self._readers.get(key)
            if reader is None:
                reader = make()
                reader.open()
                self._readers[key] = reader
            return reader

    async def close(self) -> None:
        """Drain and close every writer, and close the readers."""
        writers, self._writers = list(self._writers.values()), {}
        for writer in writers:
            await writer.close()
        with self._readers_lock:
            readers, self._readers = list(self._readers.values()), {}
        for reader in readers:
            try:
                await asyncio.to_thread(reader.close)
            except Exception:  # closing at exit: nothing left to save
                log.debug("closing an audit reader failed", exc_info=True)
