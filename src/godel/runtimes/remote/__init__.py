"""What the remote runtimes (``kubernetes``, ``e2b``) share: the workspace packed on the server, unpacked and run by
one entry script on the remote side, the result brought back as a git bundle (see ``base``, ``entry``,
``transfer``). Nothing here imports a remote client: each back-end imports its own, lazily."""
