"""The store: where a search keeps everything it learned, in LMDB, so it can stop and resume.

`records` holds the record types and their on-disk bytes (STORE_VERSION), `lmdb_env` the
environment (one writer, many readers, map growth), `store` the Store a search commits its
generations to, `check` the integrity check. Nothing outside this package talks to LMDB.
"""

from explorer.store.records import STORE_VERSION, EdgeRecord, FrontierEntry, GenerationRecord, RunRecord
from explorer.store.store import Generation, Store

__all__ = [
    "STORE_VERSION",
    "EdgeRecord",
    "FrontierEntry",
    "Generation",
    "GenerationRecord",
    "RunRecord",
    "Store",
]
