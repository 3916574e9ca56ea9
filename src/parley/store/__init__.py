"""Storage behind one port: ``port.Store`` and its engine adapters."""

from parley.store.port import Store, open_store

__all__ = ["Store", "open_store"]
