"""The ``sandbox`` runtime: each agent in bubblewrap, with the gateway as its only way out.

What is confined (first slice of issue 12, the isolation ladder):

* **Namespaces and privilege.** New user, pid, ipc, uts, network, cgroup and mount namespaces; the agent runs as
  an unprivileged id (the server's own, or 1000 when the server is root, which maps back to root's files) with
  every capability dropped (``CapEff`` 0: no mount, no mknod).
* **Processes.** Its own ``/proc``: the agent sees only the processes of its sandbox, so another process's
  environment (the server's provider keys) is out of reach. ``--die-with-parent``: nothing outlives the sandbox.
* **Files.** The system (``/usr`` and the ``/bin``, ``/lib`` links) read-only; of ``/etc`` only CA certificates,
  alternatives, the loader cache and a generated passwd/group/hosts; no ``$HOME`` of the server. Writable: the
  workspace, the agent's private directory (``$GODEL_HOME/run/<agent-id>``: its CLI config, output and home) and a
  private ``/tmp``. The agent CLIs' install folder and the interpreters their venvs use are bound read-only.
  Every path is bound at the same place inside as outside.
* **Git.** The workspace's ``.git`` file points at the agent's private git directory
  (``$GODEL_HOME/workspaces/<agent-id>/git``, see ``godel.runtimes.workspaces``), bound read-write except its
  ``config``, ``commondir``, ``hooks``, ``info`` and ``objects/info`` (read-only over it); the user repository's
  object store is bound read-only (the alternates), and nothing else of the user's repository is visible: the agent
  cannot write any ref, hook, config or object of it. Godel brings the agent's branch back with a checked fetch.
* **Network.** Only ``lo``. The server serves the gateway alone (``/proxy/…``; anything else 404) on a Unix socket
  (``$GODEL_HOME/gateway/proxy.sock``, see ``godel.api.gateway_socket``), whose directory is bound read-only at
  ``/run/godel``; inside, ``socat`` listens on ``127.0.0.1:<the server's port>`` and relays to it, so the gateway
  URL the adapters configure works unchanged, with the gateway's own virtual-key auth. The control API is not
  reachable from inside: an agent's ``GODEL_URL``/``GODEL_API_KEY`` credential does not work in this runtime yet.

Not yet (later slices): setup commands run inside the sandbox (they run on the host,
as in the local runtime); cgroup limits (memory, CPU, pids) and the cgroup freezer (pause is still SIGSTOP to the
process group, which a process that leaves the group by ``setsid`` escapes until it is found by the tree scan); an
egress allowlist; a gateway URL that is not on loopback (the relay listens on 127.0.0.1 only).
"""

from godel.runtimes.sandbox.runtime import SandboxRuntime, missing_tools

__all__ = ["SandboxRuntime", "missing_tools"]
