"""Operations on many rows, done in batches so that meters are never kept waiting."""

from __future__ import annotations

#: Rows a bulk operation (deletion, migration) touches per transaction.
BATCH_SIZE = 5000

