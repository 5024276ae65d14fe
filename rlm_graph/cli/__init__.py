"""The ``rlm`` command line: one module per subcommand.

May import anything in the package; nothing imports it but the console script and the
``llm`` integration.
"""
