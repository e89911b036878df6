"""The ``meetings`` family of docs/architecture.md's walkthrough, built exactly as the walkthrough says.

tests/unit/test_add_a_family.py registers it with one line and checks the worker's machinery picks it up.
"""
