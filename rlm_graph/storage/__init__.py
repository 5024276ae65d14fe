"""Where things are kept: home, contexts, records beside the checkpoint, savers.

The cache home, contexts by content hash, JSON records (cell records, sub-call answers)
beside the checkpoint, checkpoint files and databases, and the lock that keeps a thread
to one writer.

May import: ``text``, ``redact``. Nothing here knows about sandboxes, sub-calls or the
graph.
"""
