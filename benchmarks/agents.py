"""agents: what Godel adds to a run of each real agent CLI, against running the same CLI by hand.

For every installed CLI (pi, claude, codex, aider, mini-swe-agent, gemini), a scripted model answers a one-turn
task (a short text reply; mini-swe-agent, which must act, submits at once). Interleaved sample by sample:

- Godel: a started in-process ``ControlPlane`` (SQLite on tmpfs) spawns the agent (``ControlPlane.spawn``, as
  the API does after validation). Measured from the store's and the file system's own timestamps, no polling:
  *spawn → CLI started* = call → the transition into ``executing`` (committed right after the CLI's process
  was forked); *CLI exit → end recorded* = the mtime of the exit-status file the wrapper writes the moment the
  CLI exits → the transition into ``completed``/``failed`` (output drained, outcome judged from evidence,
  transcript saved, leftovers committed); and the whole *spawn → end recorded*.
- By hand: ``git worktree add -b`` then fork/exec of the exact argv, environment and config files the adapter
  builds (stdin closed, output to files), timed to ``Popen`` returning (*started*) and to the process's exit
  (*whole run*).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import Config, Figure, git_env, make_repo, ms_between, ms_since, utcnow, workdir
from godel.agents import get_adapter
from godel.core.events import EventFilter
from godel.core.ports import LaunchRequest, ModelEndpoint
from godel.errors import AgentSpawnError
from godel.providers.config import ProviderConfig
from godel.runtimes.processes import agent_env
from godel.scheduler.plane import ControlPlane
from godel.scheduler.requests import SpawnRequest
from godel.settings import Settings
from godel.testing import ScriptedModel

NAME = "agents"
KINDS = tuple(os.environ.get("GODEL_BENCH_AGENTS", "pi claude codex aider mini-swe-agent gemini").split())
MODEL = "scripted-model"
_ENDED = ("agent:complete", "agent:error", "agent:kill")
_SUBMIT = "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"


def _script(kind: str) -> list[dict[str, Any]]:
    if kind == "mini-swe-agent":
        return [{"tool_call": {"name": "bash", "arguments": {"command": _SUBMIT}}}]
    return [{"text": "Nothing to change."}]


def run(cfg: Config) -> list[Figure]:
    with workdir(cfg, NAME) as root:
        return asyncio.run(_run(cfg, root))


async def _run(cfg: Config, root: Path) -> list[Figure]:
    figures: list[Figure] = []
    agents_dir = Settings().agents_dir
    for kind in KINDS:
        try:
            adapter = get_adapter(kind)
            adapter.locate(agents_dir, {})
        except (AgentSpawnError, ImportError) as exc:
            cfg.log(f"agents: {kind} skipped ({exc})")
            continue
        figures += await _one_kind(cfg, root / kind, kind, agents_dir)
    return figures


async def _one_kind(cfg: Config, root: Path, kind: str, agents_dir: Path) -> list[Figure]:
    repo = root / "repo"
    base = make_repo(repo, files=200, dirs=10)
    adapter = get_adapter(kind)
    wire = adapter.wire_apis[0]
    samples, warmup = cfg.pick(10, 2), 1
    parts: dict[str, list[float]] = {k: [] for k in ("start", "end", "whole", "hand_start", "hand_whole")}
    states: dict[str, int] = {}
    with ScriptedModel(_script(kind)) as model:
        url = model.base_url if wire.startswith("openai") else model.url
        settings = Settings(
            home=root / "home",
            watch_interval=0.02,
            reconcile_interval=0.05,
            kill_grace=1.0,
            agents_dir=agents_dir,
            agent_cli_retries=0,
            use_gateway=False,  # no HTTP server here: the CLI talks to the model directly, as by hand
            providers={"scripted": ProviderConfig.model_validate({"kind": wire, "base_url": url, "models": [MODEL]})},
            log_level="warning",
        )
        plane = ControlPlane(settings)
        await plane.start()
        endpoint = ModelEndpoint(provider="scripted", kind=wire, base_url=url, model=MODEL)
        try:
            for i in range(warmup + samples):
                keep = i >= warmup
                for godel_turn in (True, False) if i % 2 == 0 else (False, True):
                    if godel_turn:
                        start, end, whole, state = await _godel_once(plane, repo, kind)
                        if keep:
                            parts["start"].append(start)
                            parts["end"].append(end)
                            parts["whole"].append(whole)
                            states[state] = states.get(state, 0) + 1
                    else:
                        hand = root / "hand" / f"w{i}"
                        hand_start, hand_whole = _by_hand(adapter, repo, base, hand, endpoint, agents_dir)
                        if keep:
                            parts["hand_start"].append(hand_start)
                            parts["hand_whole"].append(hand_whole)
            cfg.log(f"agents: {kind}: {samples} pairs, Godel runs ended {states}")
        finally:
            await plane.stop()
    note = f"ended states: {states}; scripted one-turn task; CLI retries 0"
    return [
        Figure(
            bench=NAME, name=f"{kind}: spawn → CLI started", unit="ms", godel=parts["start"],
            baseline=parts["hand_start"], baseline_label="git worktree add -b + fork/exec of the same launch",
            notes=[note],
        ),
        Figure(
            bench=NAME, name=f"{kind}: CLI exit → end recorded", unit="ms", godel=parts["end"],
            notes=["baseline is 0 by definition (by hand nothing is recorded)", note],
        ),
        Figure(
            bench=NAME, name=f"{kind}: spawn → end recorded (whole run)", unit="ms", godel=parts["whole"],
            baseline=parts["hand_whole"], baseline_label="worktree add + the same CLI run by hand, to its exit",
            notes=[note],
        ),
    ]  # fmt: skip


async def _godel_once(plane: ControlPlane, repo: Path, kind: str) -> tuple[float, float, float, str]:
    ended = plane.bus.subscribe(EventFilter(patterns=_ENDED))  # before the spawn, so the end cannot be missed
    try:
        sent = utcnow()
        agent = await plane.spawn(
            SpawnRequest(task="Say that nothing needs changing.", repo=str(repo), agent=kind,
                         model=f"scripted/{MODEL}", timeout=120),
            actor="bench",
        )  # fmt: skip
        while True:
            event = await ended.get(timeout=180)
            if event is None:
                raise RuntimeError(f"{kind} agent {agent.id} did not end within 180 s")
            if event.metadata.agent_id == agent.id:
                break
    finally:
        ended.close()
    done = await plane.get(agent.id)
    at = {t.to_state.value: t.at for t in await plane.transitions(agent.id)}
    final = at.get("completed") or at["failed"]
    exit_file = Path(done.log_dir or "") / "exit"
    exited = datetime.fromtimestamp(exit_file.stat().st_mtime_ns / 1e9, tz=UTC)
    return ms_between(sent, at["executing"]), ms_between(exited, final), ms_between(sent, final), done.state.value


def _by_hand(
    adapter: Any, repo: Path, base: str, path: Path, endpoint: ModelEndpoint, agents_dir: Path
) -> tuple[float, float]:
    cfg_dir = path.parent / f"{path.name}-run" / "config"
    t0 = time.perf_counter()
    subprocess.run(
        ["git", "worktree", "add", "--quiet", "-b", f"hand/{path.name}-{os.getpid()}", str(path), base],
        cwd=repo, check=True, capture_output=True, env=git_env(),
    )  # fmt: skip
    spec = adapter.launch(
        LaunchRequest(
            agent_id=path.name, task="Say that nothing needs changing.", model=f"scripted/{MODEL}", workspace=path,
            config_dir=cfg_dir, endpoint=endpoint, tools_dir=agents_dir, cli_retries=0,
        )
    )  # fmt: skip
    for file, content in spec.files.items():
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(content)
    (cfg_dir.parent / "output").mkdir(parents=True, exist_ok=True)
    with open(path.parent / f"{path.name}.out", "wb") as out, open(path.parent / f"{path.name}.err", "wb") as err:
        proc = subprocess.Popen(
            spec.argv, cwd=spec.cwd or path, env=agent_env(spec.env), stdin=subprocess.DEVNULL, stdout=out,
            stderr=err, start_new_session=True,
        )  # fmt: skip
        started = ms_since(t0)
        proc.wait(timeout=180)
    return started, ms_since(t0)
