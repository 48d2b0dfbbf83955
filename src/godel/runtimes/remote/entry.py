"""The program that runs first in a remote workspace (a Kubernetes pod, an E2B sandbox) and brings the result back.

One POSIX shell script, the same for every remote runtime, so the image needs only ``sh``, ``git``, ``tar``,
``gzip``, ``base64`` and ``setsid``. Its arguments: the transfer directory, the workspace path, the branch, the
working directory, where the agent's stdout goes (``-``: the entry's own stdout, i.e. the pod's log), then the
agent's argv. It

1. waits for ``in.ready`` in the transfer directory (Godel puts ``in.tgz`` there first: by an exec into the pod, by
   an upload to the sandbox), unpacks it: a git bundle of the agent's branch, a tar of the working tree, a tar of the
   launch's config files at their absolute paths and the repository's git identity;
2. clones the bundle into the workspace path (the same absolute path as on the server, so paths an adapter put in
   argv and env hold inside), lays the working tree over it, writes the config files;
3. runs the agent in its own process group (``setsid``), its pgid in ``agent.pid`` (what a terminate signals), its
   stderr to ``stderr.log``; waits; kills what is left of the group;
4. records the result: ``refs/godel/head`` (the agent's HEAD) and ``refs/godel/worktree`` (a commit of its whole
   working tree on top of HEAD, untracked files included) in ``result.bundle`` (everything since the commit it
   started from), packed with stderr and the exit status into ``out.tgz``; then with ``-`` prints it, base64, after
   ``MARKER`` on stdout (the pod's log, the one channel that outlives the pod's end), and writes ``exit`` last.

A failure before the agent runs (a bad payload) is reported the same way, with exit status 125 and the reason in
stderr: the result always comes back when the entry itself survives.
"""

from __future__ import annotations

# A record separator no text line ends with, then a name: what Godel looks for to split the agent's stdout from the
# result in a pod's log (``godel.runtimes.remote.transfer.split_log``).
MARKER = b"\x1e@@GODEL-RESULT@@\n"
END = b"@@GODEL-END@@"
TRANSFER_DIR = "/tmp/godel"
SETUP_FAILED = 125

ENTRY = r"""
G=$1 WS=$2 BRANCH=$3 CWD=$4 OUT=$5; shift 5
mkdir -p "$G" && exec 2>>"$G/stderr.log"
code=0 START=
note() { printf 'godel: %s\n' "$1" >&2; }
prepare() {
  n=0
  while [ ! -e "$G/in.ready" ]; do  # a server that died while handing it over never will: give up in 10 minutes
    n=$((n + 1)); [ "$n" -lt 6000 ] || { note "no workspace arrived"; return 1; }; sleep 0.1
  done
  mkdir -p "$G/in" "$G/out" "$WS" && tar xzf "$G/in.tgz" -C "$G/in" ||
    { note "cannot unpack the workspace"; return 1; }
  git clone -q --no-checkout -b "$BRANCH" "$G/in/repo.bundle" "$WS" || { note "cannot clone the workspace"; return 1; }
  cd "$WS" && git remote remove origin && tar xf "$G/in/tree.tar" && git reset -q ||
    { note "cannot lay the working tree"; return 1; }
  { IFS= read -r name; IFS= read -r email; } <"$G/in/identity"
  [ -z "$name" ] || git config user.name "$name"
  [ -z "$email" ] || git config user.email "$email"
  START=$(git rev-parse HEAD) || return 1
  [ ! -s "$G/in/files.tar" ] || tar xpf "$G/in/files.tar" -C / || { note "cannot write the launch's files"; return 1; }
  rm -rf "$G/in" "$G/in.tgz"
}
run() {
  cd "$CWD" || { note "no directory $CWD"; return "$SETUP"; }
  if [ "$OUT" = - ]; then setsid "$@" </dev/null & else setsid "$@" </dev/null >>"$OUT" & fi
  pid=$!
  printf '%s\n' "$pid" >"$G/agent.pid"
  wait "$pid"; c=$?
  kill -KILL "-$pid" 2>/dev/null  # what the agent left running in its group (dash's kill takes no --)
  return "$c"
}
collect() {
  [ -n "$START" ] && cd "$WS" || return 0
  export GIT_AUTHOR_NAME=Godel GIT_AUTHOR_EMAIL=godel@localhost
  export GIT_COMMITTER_NAME=Godel GIT_COMMITTER_EMAIL=godel@localhost
  I="$G/index.tmp"
  rm -f "$I"
  head=$(git rev-parse --verify HEAD 2>/dev/null) || { note "the workspace has no HEAD any more"; return 0; }
  GIT_INDEX_FILE="$I" git read-tree "$head" && GIT_INDEX_FILE="$I" git add -A &&
    tree=$(GIT_INDEX_FILE="$I" git write-tree) &&
    work=$(git commit-tree "$tree" -p "$head" -m "godel: working tree") &&
    git update-ref refs/godel/head "$head" && git update-ref refs/godel/worktree "$work" &&
    git bundle create "$G/out/result.bundle" refs/godel/head refs/godel/worktree "^$START" 2>/dev/null ||
    note "cannot bundle the result"
  rm -f "$I"
}
SETUP=125
if prepare; then run "$@"; code=$?; else code=$SETUP; fi
collect
cp "$G/stderr.log" "$G/out/stderr.log" 2>/dev/null || : >"$G/out/stderr.log"
printf '%s\n' "$code" >"$G/out/code"
tar czf "$G/out.tgz.tmp" -C "$G/out" . && mv -f "$G/out.tgz.tmp" "$G/out.tgz"
if [ "$OUT" = - ]; then printf '\036@@GODEL-RESULT@@\n'; base64 "$G/out.tgz"; printf '@@GODEL-END@@\n'; fi
printf '%s\n' "$code" >"$G/exit.tmp" && mv -f "$G/exit.tmp" "$G/exit"
exit "$code"
"""


def entry_argv(workspace: str, branch: str, cwd: str, stdout: str, argv: list[str]) -> list[str]:
    """The container's (or command's) argv: the entry script with its arguments, then the agent's argv."""
    return ["/bin/sh", "-c", ENTRY, "godel-entry", TRANSFER_DIR, workspace, branch, cwd, stdout, *argv]
