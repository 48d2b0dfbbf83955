"""Agent workspaces: a private git directory per agent, Godel's neutralised git, and constant-time checkouts.

* ``manager``: creating and removing workspaces (an overlay of a cached checkout, or a plain checkout);
* ``gitdir``: the agent's private git directory, Godel's own view of the work tree, and ``bring_back``, the
  checked fetch of the agent's branch into the user's repository;
* ``safegit``: git run by Godel on a tree an agent controls, with everything that could run a program switched off;
* ``changes``: the workspace's tree, diff, dirtiness and commits, read through Godel's view;
* ``cache`` and ``overlay``: the cached read-only checkouts and the overlayfs mounts over them.

The user's repository is written by Godel only: the agent's objects and refs live in its private git directory,
and Godel fetches its branch back (with object checking) when the run's commits are collected, for a snapshot,
after a restore, before cleanup and before a merge.
"""
