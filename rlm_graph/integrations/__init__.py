"""rlm-graph inside other tools: where agents and their users already work.

``llm/`` the ``llm`` CLI plugin; ``langchain`` a tool for LangChain agents; ``deepagents``
a deepagents subagent; ``mcp`` an MCP server (``rlm mcp``); ``calls`` what the last three
share (settings, folders and traces fixed at creation, one call, its provenance line).

The top layer: may import anything in the package; nothing in the package imports it but
``cli.mcp`` (which serves ``mcp``). ``deepagents`` and ``mcp`` need their extras.
"""
