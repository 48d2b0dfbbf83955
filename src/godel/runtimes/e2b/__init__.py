"""The ``e2b`` runtime: each agent in an E2B sandbox (see ``runtime``). Not verified against live E2B: tested against
a fake API and envd at the HTTP edge (``tests/remote/fake_e2b.py``)."""

from godel.runtimes.e2b.runtime import E2BRuntime

__all__ = ["E2BRuntime"]
