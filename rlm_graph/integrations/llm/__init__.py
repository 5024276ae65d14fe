"""The ``llm`` plugin: the ``RLM`` toolbox and the ``llm rlm`` command.

Entry point: ``[project.entry-points.llm] rlm_graph = "rlm_graph.integrations.llm.plugin"``.
"""
