"""The ``gvisor`` runtime: each agent in a gVisor sandbox (``runsc``), with the ``sandbox`` runtime's contract.

What is confined (issue 12 item 5):

* **Kernel.** The agent's system calls are served by gVisor's own kernel (the "sentry", a user-space process on
  the ptrace platform), not by the host's: an exploit of a Linux system call reaches gVisor, which itself runs
  confined. ``uname`` inside reports gVisor's 4.4.0.
* **Identity.** The server's uid and gid (root's when the server is root: gVisor cannot map ids as bubblewrap
  does, see ``gvisor_ids``) with every capability set empty, the bounding set included, and ``no_new_privs``.
* **Processes.** gVisor's own pid namespace and ``/proc``: the host's processes (the server's environment and its
  provider keys) do not exist inside. When the agent (the sandbox's first process) exits, the sandbox ends and
  everything in it, daemons included; a kill of the host-side wrapper's group ends the sandbox too.
* **Files.** Exactly the ``sandbox`` runtime's view (``SandboxRuntime._confinement``): the system read-only, a
  minimal ``/etc``, the workspace, the agent's private directory and git's write paths writable, the agent CLIs
  and their interpreters read-only, every path at the same place inside as outside, on an empty read-only root.
  ``/tmp``, ``/dev`` and ``/proc`` are gVisor's own.
* **Network.** gVisor's network stack with a loopback interface only. The server's gateway socket directory is
  bound read-only at ``/run/godel`` and runsc may connect to it (``--host-uds=open``); ``socat`` inside listens on
  ``127.0.0.1:<gateway port>`` (gVisor's loopback) and relays to it, as in the bubblewrap sandbox.
* **Pause** stops the sandbox's host processes (runsc, its gofer, the sentry and its stubs): the guest, daemons
  included, cannot run while its kernel is stopped.

* **Godel's own commands** (a spawn's setup, merge gates and resolvers when gvisor is the default runtime) run in
  one-off gVisor sandboxes of their own with no way out (``GVisorRuntime.confine``).

Not confined yet: no resource limits of its own (runsc runs with ``--ignore-cgroups``; limits come from the
cgroups the host-side wrapper is put in); ``ls -l`` and ``stat`` of Debian 12's coreutils fail inside with EINVAL
(this gVisor build refuses their ``statx`` flags).
"""

from godel.runtimes.gvisor.runtime import GVisorRuntime, runsc_problem

__all__ = ["GVisorRuntime", "runsc_problem"]
