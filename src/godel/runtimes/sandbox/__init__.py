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
* **Git.** The worktree's ``.git`` file points into the user's repository (``.git/worktrees/<name>``). The
  repository's git directory is bound read-only, and read-write only where a commit writes: ``objects``, ``refs``,
  ``logs`` and this worktree's own git directory. The agent cannot change the repository's hooks or config, but it
  can still write objects and any ref (other branches included): a private git directory per agent (issue 12
  item 3) is the next slice.
* **Network.** Only ``lo``. The server serves the gateway alone (``/proxy/…``; anything else 404) on a Unix socket
  (``$GODEL_HOME/gateway/proxy.sock``, see ``godel.api.gateway_socket``), whose directory is bound read-only at
  ``/run/godel``; inside, ``socat`` listens on ``127.0.0.1:<the server's port>`` and relays to it, so the gateway
  URL the adapters configure works unchanged, with the gateway's own virtual-key auth. The control API is not
  reachable from inside: an agent's ``GODEL_URL``/``GODEL_API_KEY`` credential does not work in this runtime yet.

Not yet (later slices): the private git directory; setup commands run inside the sandbox (they run on the host,
as in the local runtime); cgroup limits (memory, CPU, pids) and the cgroup freezer (pause is still SIGSTOP to the
process group, which a process that leaves the group by ``setsid`` escapes until it is found by the tree scan); an
egress allowlist; a gateway URL that is not on loopback (the relay listens on 127.0.0.1 only).
"""

from godel.runtimes.sandbox.runtime import SandboxRuntime, missing_tools

__all__ = ["SandboxRuntime", "missing_tools"]
