"""The live board: a page at ``/`` that shows the Redis outputs and updates itself (server-sent events)."""
