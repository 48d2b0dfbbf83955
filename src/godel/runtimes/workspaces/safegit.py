"""Git run by Godel on a tree an agent controls, so that nothing the agent wrote can make it run a program.

Git executes programs named by its configuration (``core.fsmonitor``, hooks, filter/diff/merge drivers that
``.gitattributes`` select, signing programs, editors, pagers, transports) and follows ``include.path``. An
agent can plant any of these in its workspace and its git directory; Godel then runs git there itself (a
snapshot, a diff, a commit at the run's end, a restore), on the host, outside any sandbox. So every such call:

* names the repository and the work tree explicitly (``--git-dir``, ``--work-tree``, ``GIT_COMMON_DIR``): the
  repository is never discovered from the workspace's ``.git`` file, which the agent can point anywhere;
* reads no system or global configuration (``GIT_CONFIG_NOSYSTEM``, ``GIT_CONFIG_GLOBAL=/dev/null``): Godel's
  identity comes from the environment;
* overrides, through ``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_n``/``GIT_CONFIG_VALUE_n`` (command-line scope, which
  wins over every file, and takes names with ``=`` or spaces that ``-c`` cannot), every setting that runs a
  program, with a value that runs nothing, including the commands of each filter, diff and merge driver the
  repository's configuration defines (their names are listed first with ``git config --includes --name-only``,
  which executes nothing; included files count);
* turns replace refs, submodule recursion and automatic gc (whose ``pre-auto-gc`` hook) off, and allows only the
  ``file`` transport.

Measured on git 2.39: an empty ``filter.<name>.clean``/``smudge``/``process`` is no filter (with ``required``
off), an empty ``diff.<name>.textconv`` no textconv; an empty ``diff.external`` would be run (and fail), so diffs
pass ``--no-ext-diff``, which also ignores ``diff.<name>.command``. ``core.hooksPath=/dev/null`` finds no hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import structlog

from godel.errors import GitError, RuntimeFailure
from godel.runtimes.workspaces import jail
from godel.runtimes.workspaces.jail import Jail

log = structlog.get_logger("godel.runtime")

# Settings that run a program, and the values that make them run none.
NEUTRAL: dict[str, str] = {
    "core.fsmonitor": "false",
    "core.hooksPath": "/dev/null",  # no hook found there: pre-commit, post-checkout, reference-transaction, …
    "core.sshCommand": "false",
    "core.gitProxy": "",
    "core.askPass": "",
    "core.editor": ":",
    "sequence.editor": ":",
    "core.pager": "cat",
    "core.alternateRefsCommand": "",
    "core.attributesFile": "/dev/null",
    "core.excludesFile": "/dev/null",
    "core.bare": "false",
    "core.untrackedCache": "false",
    "core.splitIndex": "false",
    "core.useReplaceRefs": "false",
    "credential.helper": "",
    "diff.external": "",  # never reached: every diff passes --no-ext-diff (an empty one would be run and fail)
    "diff.submodule": "short",
    "gpg.program": "false",
    "gpg.ssh.program": "false",
    "gpg.x509.program": "false",
    "gpg.ssh.defaultKeyCommand": "",
    "commit.gpgSign": "false",
    "tag.gpgSign": "false",
    "log.showSignature": "false",
    "merge.verifySignatures": "false",
    "submodule.recurse": "false",
    "fetch.recurseSubmodules": "false",
    "status.submoduleSummary": "false",
    "gc.auto": "0",
    "maintenance.auto": "false",
    "protocol.allow": "never",
    "protocol.file.allow": "always",
    "uploadpack.allowAnySHA1InWant": "true",
}

# What each kind of driver runs (``<section>.<name>.<key>``) and the value that runs nothing.
_DRIVER_KEYS: dict[str, dict[str, str]] = {
    "filter": {"clean": "", "smudge": "", "process": "", "required": "false"},
    "diff": {"command": "", "textconv": "", "cachetextconv": "false"},
    "merge": {"driver": ""},
}

# Inherited variables that redirect git or run a program; Godel sets what it needs itself.
_DROPPED = (
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_PREFIX", "GIT_CEILING_DIRECTORIES", "GIT_CONFIG", "GIT_CONFIG_COUNT",
    "GIT_CONFIG_PARAMETERS", "GIT_EXTERNAL_DIFF", "GIT_SSH", "GIT_SSH_COMMAND", "GIT_PROXY_COMMAND", "GIT_ASKPASS",
    "SSH_ASKPASS", "GIT_EXEC_PATH", "GIT_TEMPLATE_DIR", "GIT_REPLACE_REF_BASE",
)  # fmt: skip


def neutral_env(
    drivers: Iterable[tuple[str, str]] = (),
    extra: Mapping[str, str] | None = None,
    config: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a neutralised git: the server's, without anything that redirects git, with the
    overrides of ``NEUTRAL`` and of every driver in ``drivers`` ((section, name) pairs), then ``config``."""
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED and not k.startswith("GIT_CONFIG_")}
    env.update(
        GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_SYSTEM="/dev/null", GIT_ATTR_NOSYSTEM="1",
        GIT_NO_REPLACE_OBJECTS="1", GIT_TERMINAL_PROMPT="0", GIT_EDITOR=":", GIT_SEQUENCE_EDITOR=":", GIT_PAGER="cat",
        GIT_ALLOW_PROTOCOL="file", GIT_PROTOCOL_FROM_USER="0", LC_ALL="C",
    )  # fmt: skip
    pairs = dict(NEUTRAL)
    for section, name in drivers:
        for key, value in _DRIVER_KEYS[section].items():
            pairs[f"{section}.{name}.{key}"] = value
    pairs.update(config or {})
    env["GIT_CONFIG_COUNT"] = str(len(pairs))
    for i, (key, value) in enumerate(pairs.items()):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    if extra:
        env.update(extra)
    return env


def driver_names(keys: Iterable[str]) -> set[tuple[str, str]]:
    """The (section, name) of every filter, diff and merge driver among configuration keys such as
    ``filter.lfs.clean`` (a name may itself hold dots: ``filter.a.b.clean`` is driver ``a.b``)."""
    found = set()
    for key in keys:
        section, _, rest = key.partition(".")
        name, _, _ = rest.rpartition(".")
        if section.lower() in _DRIVER_KEYS and name:
            found.add((section.lower(), name))
    return found


def upload_pack_command() -> str:
    """The ``--upload-pack`` program of a fetch from an agent's git directory. Git clears command-line config for
    the server side of a local transport, so the overrides are given again on its own command line (upload-pack
    runs no driver; its one hook, ``uploadpack.packObjectsHook``, is read from system, global and command-line
    configuration only, and the first two are off)."""
    words = ["env", "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_NO_REPLACE_OBJECTS=1", "git"]
    for key, value in NEUTRAL.items():
        words += ["-c", f"{key}={value}"]
    return shlex.join([*words, "upload-pack"])


async def run(
    args: Sequence[str],
    *,
    git_dir: Path,
    work_tree: Path | None = None,
    env: Mapping[str, str] | None = None,
    drivers: Iterable[tuple[str, str]] = (),
    config: Mapping[str, str] | None = None,
    check: bool = True,
    private: bool = False,
    confine: Jail | None = None,
) -> tuple[int, bytes, bytes]:
    """``git --git-dir=GIT_DIR [--work-tree=WORK_TREE] ARGS`` neutralised; (returncode, stdout, stderr). The common
    directory is the git directory itself; ``private``: an agent's git directory, whose ``commondir`` is pinned
    first (``pin_commondir``), and which git only sees in a jail (``private_jail``). ``confine``: run where only the
    system and these folders exist (``jail``), for a command that reads a work tree an agent may still be changing;
    the git directory and work tree (read-only) are added."""
    if private:
        await asyncio.to_thread(pin_commondir, git_dir)
        if confine is None:
            confine = await asyncio.to_thread(private_jail, git_dir, work_tree)
    argv = ["git", f"--git-dir={git_dir}"]
    if confine is not None:
        if jail.available():
            tree = [work_tree] if work_tree is not None and work_tree not in confine.writable else []
            seen = Jail(
                readonly=[*confine.readonly, *tree],
                writable=[*confine.writable, git_dir] if git_dir not in confine.readonly else confine.writable,
            )  # fmt: skip
            argv = [*jail.argv(seen, git_dir), *argv]
        else:
            log.warning("git reads a work tree unconfined: bubblewrap is not installed", git_dir=str(git_dir))
    if work_tree is not None:
        argv.append(f"--work-tree={work_tree}")
    full_env = neutral_env(drivers, {"GIT_COMMON_DIR": str(git_dir), **(env or {})}, config)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            *args,
            cwd=git_dir,  # never the workspace: nothing is discovered from it
            env=full_env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError as exc:
        if shutil.which("git") is None:
            raise RuntimeFailure("git is not installed") from exc
        raise GitError(list(args), -1, f"cannot run git on {git_dir}: {exc}") from exc
    out, err = await proc.communicate()
    rc = proc.returncode if proc.returncode is not None else -1
    if check and rc != 0:
        raise GitError(list(args), rc, err.decode("utf-8", errors="replace"))
    return rc, out, err


def private_jail(git_dir: Path, work_tree: Path | None) -> Jail:
    """Where Godel's git runs on an agent's private git directory: the directory and the work tree writable, the
    object stores its alternates name read-only, nothing else. The agent writes in that directory (in a sandbox:
    all but ``PROTECTED``) and may put a symlink where git writes: ``logs/HEAD`` to a host file (git appends its
    reflog line there, as the server's user), ``objects/<xx>`` to a host folder (git creates its objects there).
    Found by a hostile review; in the jail such a symlink names nothing."""
    readonly = []
    try:
        lines = (git_dir / "objects/info/alternates").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        path = Path(line.strip())
        if path.is_absolute() and path.is_dir():
            readonly.append(path)
    return Jail(readonly=readonly, writable=[git_dir, *([work_tree] if work_tree is not None else [])])


def pin_commondir(git_dir: Path) -> None:
    """Make ``git_dir`` its own common directory. Git reads a ``commondir`` file in a git directory before
    anything else (``GIT_COMMON_DIR`` does not override it everywhere: git 2.39 then finds no HEAD), and from the
    directory it names takes config, refs and objects: one written by the agent would point Godel's git at a planted
    repository. A private git directory has one saying "." (read-only in a sandbox); anything else is put back."""
    path = git_dir / "commondir"
    try:
        if path.read_bytes() == b".\n":
            return
    except OSError:
        pass
    tmp = git_dir / "commondir.godel-tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.write_bytes(b".\n")
    os.replace(tmp, path)


async def text(
    args: Sequence[str],
    *,
    git_dir: Path,
    work_tree: Path | None = None,
    env: Mapping[str, str] | None = None,
    drivers: Iterable[tuple[str, str]] = (),
    private: bool = False,
) -> str:
    """``run``'s stdout as text (trailing newline stripped); GitError when git fails."""
    _, out, _ = await run(args, git_dir=git_dir, work_tree=work_tree, env=env, drivers=drivers, private=private)
    return out.decode("utf-8", errors="replace").rstrip("\n")


async def configured_drivers(git_dir: Path, *, private: bool = False) -> set[tuple[str, str]]:
    """The drivers ``git_dir``'s configuration (with what it includes) defines: their commands are overridden on
    every command that may run them. Listing executes nothing."""
    args = ["config", "--includes", "--null", "--name-only", "--list"]
    rc, out, _ = await run(args, git_dir=git_dir, check=False, private=private)
    if rc not in (0, 1):  # 1: no configuration at all
        raise GitError(["config", "--list"], rc, f"cannot read the configuration of {git_dir}")
    return driver_names(k.decode("utf-8", errors="replace") for k in out.split(b"\0") if k)
