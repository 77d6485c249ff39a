"""The store: a revisioned key-value space with compare-and-swap transactions and a watch.

The service keeps all the logic (allocation, uniqueness, referential checks) and speaks to the
store only through :class:`~sixpn.store.base.Store`; backends (SQLite, etcd) stay thin.
"""

from sixpn.store.base import (
    KV,
    Compare,
    Delete,
    Event,
    EventType,
    Op,
    Put,
    Store,
    TxnResult,
)

__all__ = ["KV", "Compare", "Delete", "Event", "EventType", "Op", "Put", "Store", "TxnResult"]
