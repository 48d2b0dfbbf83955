"""The ``kubernetes`` runtime: each agent a Pod (see ``runtime`` and ``pods``). Not verified against a live cluster:
tested against a fake API server at the HTTP edge (``tests/remote/fake_k8s.py``)."""

from godel.runtimes.kubernetes.runtime import KubernetesRuntime

__all__ = ["KubernetesRuntime"]
