"""The sandboxed Python REPL: eryx sessions, their prelude, the registry, a cell.

Eryx sessions (in child processes or inline), the prelude defined inside them, the
registry of live sessions by id, and the one cell step.

May import: ``storage``, ``text``, ``redact``. It never imports ``settings``,
``subcalls`` or ``graph``: sub-calls reach it through the ``SubCallHandler`` protocol.
The sandbox zygote imports this package alone, so it stays free of LangChain.
"""
