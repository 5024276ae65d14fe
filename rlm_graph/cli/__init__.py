"""The ``rlm`` command line: one module per subcommand.

``main.py`` builds the parser from light modules (``common.py``, ``settings``, the eval
flags) and imports a subcommand's module (``run``, ``threads``, ``demo``, ``eval``,
``traces``) only when it runs, so ``rlm --help`` starts without LangGraph.

May import anything in the package; nothing imports it but the console script and the
``llm`` integration.
"""
