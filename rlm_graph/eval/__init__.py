"""``rlm eval``: the paper's long-context tasks, generated at any size, and scored.

Module map: ``tasks`` (the task type, sizes, the registry of families), ``niah``,
``oolong`` (with its pairs variant) and ``multihop`` (the generators), ``trec`` (the
shipped TREC questions and their hidden labels), ``scoring``, ``oracle`` (the offline
sub-model), ``policies`` (the offline scripted root model), ``runner`` (methods and
runs), ``results`` (the resumable JSONL file), ``report`` (summary, table, progress),
``pricing`` (dollars per token).
"""
