"""``llm_query`` / ``llm_batch`` on the host: broker, tree budget, memo.

The broker that answers them, the budget shared by a recursion tree, and the memo of
answers kept beside the checkpoint.

May import: ``models``, ``settings``, ``storage``, ``observe``, ``text``. A sub-RLM is
started through a callable the graph injects, never by importing the graph.
"""
