"""The ``container`` runtime: each agent in a podman container (runc), in an image built on this machine from
Debian packages (``scripts/build-agent-image``; no image registry is needed). See docs/container.md.

What is confined (the sandbox's workspace contract, docs/sandbox.md, in a container):

* **Identity and privilege.** A user namespace in which the agent is uid/gid 1000 (the image's ``agent``) and that
  id is the server's own outside, so its files in the workspace are the server's user's; every other id maps to an
  unused host range. Every capability dropped, ``no-new-privileges``, podman's default seccomp profile.
* **Processes.** Own pid, ipc, uts, mount and network namespaces: the server's ``/proc/<pid>/environ`` is out of
  sight. ``--init`` (catatonit) is pid 1 and ends with the agent, and with it everything the agent started.
* **Files.** The image's root read-only; private tmpfs on ``/tmp``, ``/run``, ``/var/tmp``. Writable: the
  workspace, the agent's private directory (``$GODEL_HOME/run/<agent-id>``), the folders of its config files and
  git's write paths (from ``SandboxRuntime._git_paths``); read-only: the agent CLIs' install folder, the
  interpreters of their venvs, the repository's git directory, and the host's ``node`` at /usr/local/bin/node.
  Every path at the same place inside as outside.
* **Network.** ``--network none``: only ``lo``. The gateway's Unix socket directory is bound at ``/run/godel`` and
  socat relays ``127.0.0.1:<gateway port>`` to it inside, as in the sandbox.
* **Limits.** ``--memory``, ``--cpus``, ``--pids-limit`` (cgroup v1 here, through runc) from the runtime's defaults
  or ``config.sandbox.limits``; pause is the cgroup freezer (``podman pause``).
"""

from godel.runtimes.container.podman import DEFAULT_IMAGE, Limits, missing_tools
from godel.runtimes.container.runtime import ContainerRuntime

__all__ = ["DEFAULT_IMAGE", "ContainerRuntime", "Limits", "missing_tools"]
