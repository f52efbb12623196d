"""Operations on many rows, done in batches so that meters are never kept waiting."""

from __future__ import annotations

import time

import peewee as pw

from txm.db.sqlite import between_batches, write_transaction

#: Rows a bulk operation (deletion, migration) touches per transaction.
BATCH_SIZE = 5000


def delete_in_batches(model: type[pw.Model], condition: pw.Expression, key: pw.Field,
                      batch_size: int = BATCH_SIZE) -> int:
    """Delete the rows of ``model`` that meet ``condition``, ``batch_size`` at a time in the order
    of ``key``; return how many went.

    Each batch is its own short write transaction: find the key of the batch's last row along an
    index that serves ``condition`` and ``key`` together (a unit's samples: ``(unit, timestamp)``;
    its alarms: ``unit``, then id), then delete that range. No long lock and no list of ids; on
    SQLite :func:`txm.db.sqlite.between_batches` lets the TTP server take the lock in between.
    A key that is not unique among the rows only makes some batches larger.
    """
    deleted = 0
    while True:
        with write_transaction():
            locked_at = time.monotonic()  # the write lock is ours from here
            boundary = (model.select(key).where(condition).order_by(key)
                        .offset(batch_size - 1).limit(1).scalar())
            if boundary is None:
                return deleted + model.delete().where(condition).execute()
            deleted += model.delete().where(condition & (key <= boundary)).execute()
        between_batches(locked_at)
