"""Third review: Godel's own git writes in the agent's private git directory on the host, outside the jail (the
commit at a run's end, a restore, a fork), and the agent may replace what it writes there by symlinks.

Git appends to reflogs (``logs/HEAD``, ``logs/refs/heads/<branch>``) by opening them with ``O_APPEND``, and writes
loose objects into ``objects/<xx>/``: both follow a symlink. A sandboxed agent that points them at a host file or
folder has Godel's git, as the server's user, append lines to that file or create files in that folder."""

from __future__ import annotations

import contextlib
import shlex

from godel.core.ports import LaunchSpec
from godel.errors import RuntimeFailure
from tests.sandbox.conftest import DONE, Rig


async def test_a_sandboxed_agent_has_godels_commit_append_to_a_host_file_through_its_reflog(rig: Rig) -> None:
    target = rig.base / "host-file"  # not bound into the sandbox: only the host's git can write it
    target.write_text("the host's own line\n")
    script = (
        'G=$(sed -n "s/^gitdir: //p" .git); B=$(git symbolic-ref HEAD); '
        f'for log in "$G/logs/HEAD" "$G/logs/$B"; do mkdir -p "$(dirname "$log")"; rm -f "$log"; '
        f'ln -s {shlex.quote(str(target))} "$log"; done; '
        "echo changed >> README.md"
    )
    code, out = await rig.run(script)
    assert code == 0, out
    handle = rig.handles[-1]
    await rig.runtime.commit_all(handle, "the end of the run")
    assert target.read_text() == "the host's own line\n", f"Godel's git appended to a host file: {target.read_text()!r}"


async def test_a_sandboxed_agent_has_godels_commit_create_files_in_a_host_folder_through_its_objects(rig: Rig) -> None:
    target = rig.base / "host-folder"
    target.mkdir()
    script = (
        'G=$(sed -n "s/^gitdir: //p" .git); '
        "for i in 0 1 2 3 4 5 6 7 8 9 a b c d e f; do for j in 0 1 2 3 4 5 6 7 8 9 a b c d e f; do "
        f'rm -rf "$G/objects/$i$j"; ln -s {shlex.quote(str(target))} "$G/objects/$i$j"; done; done; '
        "git rm -q README.md"  # a change that needs no new blob: only Godel's commit (unjailed) writes objects
    )
    code, out = await rig.run(script)
    assert code == 0, out
    handle = rig.handles[-1]
    try:
        await rig.runtime.commit_all(handle, "the end of the run")
    except Exception:  # a failed commit is fine: what counts is whether anything landed in the host folder
        pass
    assert not list(target.iterdir()), f"Godel's git created files in a host folder: {list(target.iterdir())}"


async def test_a_sandboxed_agent_has_its_next_launch_write_a_host_file_through_its_home(rig: Rig) -> None:
    """The agent's private directory survives its run (a retry, a restart launch it again): a dangling symlink
    left at ``~/.gitconfig`` had the next launch create the file it names, as the server's user."""
    target = rig.base / "host-created"
    script = f'rm -f "$HOME/.gitconfig"; ln -s {shlex.quote(str(target))} "$HOME/.gitconfig"; echo planted'
    code, out = await rig.run(script)
    assert code == 0 and "planted" in out, out
    handle = rig.handles[-1]
    await rig.runtime.start(handle, LaunchSpec(["/bin/sh", "-c", "true"], {}))
    await rig.runtime.wait_for_state(handle, DONE, timeout=30)
    assert not target.exists(), f"the next launch wrote a host file through the agent's symlink: {target.read_text()!r}"


async def test_a_sandboxed_agent_has_its_next_launch_write_its_config_into_a_host_folder(rig: Rig) -> None:
    """The same through a folder of its private directory where an adapter writes its config (codex's, pi's): left a
    symlink to a host folder, the next launch wrote the config there. It is refused now."""
    target = rig.base / "host-folder"
    target.mkdir()
    script = f'rm -rf "$HOME/../config"; ln -s {shlex.quote(str(target))} "$HOME/../config"; echo planted'
    code, out = await rig.run(script)
    assert code == 0 and "planted" in out, out
    handle = rig.handles[-1]
    config = rig.runtime.private_dir(handle.agent_id) / "config" / "config.toml"  # type: ignore[attr-defined]
    with contextlib.suppress(RuntimeFailure):
        await rig.runtime.start(handle, LaunchSpec(["/bin/sh", "-c", "true"], {}, files={config: "model = x"}))
        await rig.runtime.wait_for_state(handle, DONE, timeout=30)
    assert not list(target.iterdir()), f"the next launch wrote into a host folder: {list(target.iterdir())}"
