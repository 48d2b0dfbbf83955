"""aider (``aider-chat``) with one ``--message`` and its chat history as the record.

Launch: ``aider --model P/M --weak-model P/M --edit-format whole --message TASK --yes-always --no-stream ...``
with ``HOME=CFG`` (aider's own config and caches), the endpoint in a model-settings file (litellm's
``api_base``/``api_key``/``max_retries: 0``), and the chat history in ``OUTPUT/chat-ID.md``. aider's own retry
loop (0.25 s doubling up to 60 s, about 85 s with the endpoint down) has no flag: aider is started through its
own Python with ``RETRY_TIMEOUT`` set so it retries ``cli_retries`` times.

aider has no structured stream, no tools and **exits 0 on failure**. The evidence is:

- stdout lines: ``Tokens: A sent, B received. Cost: $X message, $Y session.`` (usage, with ``k`` rounding above
  1000 tokens) and ``litellm.SomeError: ...`` (a failed model request) -- turned into signals as they come;
- the chat history of this run (the markdown file, read from the offset it had at launch): ``#### `` lines are
  the user's message, ``> `` lines aider's own output (``Applied edit to PATH``, ``Commit HASH MSG``, errors),
  the rest is the assistant's reply -- turned into messages, one edit call/result per applied edit, the session
  and the final verdict once aider exited;
- its git commits and the diff (``outcome``: a run that changed nothing fails unless ``require_change`` is off).

A follow-up restores the conversation with ``--restore-chat-history`` from the same chat file (the session id).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import uuid
from pathlib import Path
from typing import Any

from godel.agents.base import CliAdapter, clip, error, final, usage
from godel.core.ports import AgentSignal, LaunchRequest, LaunchSpec, SignalKind, WireApi
from godel.errors import AgentSpawnError, FieldError

RUN_FILE = "aider-run.json"  # in the output dir: which chat file this run writes, from which offset
_PREFIX = {"openai-chat": "openai", "anthropic": "anthropic"}
EDIT_FORMATS = ("whole", "diff", "diff-fenced", "udiff", "udiff-simple", "patch", "architect", "ask",
                "editor-diff", "editor-diff-fenced", "editor-whole")  # fmt: skip
# aider retries a failed request after 0.25 s, 0.5 s, 1 s ... while the delay is <= RETRY_TIMEOUT (60 s).
_BOOT = (
    "import sys\n"
    "import aider.models, aider.coders.base_coder as bc\n"
    "aider.models.RETRY_TIMEOUT = bc.RETRY_TIMEOUT = float(sys.argv.pop(1))\n"
    "from aider.main import main\n"
    "sys.argv[0] = 'aider'\n"
    "sys.exit(main())\n"
)
_GIT_IDENTITY = ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL")

_TOKENS = re.compile(
    r"^Tokens: (?P<sent>[\d.]+k?) sent(?:, (?P<write>[\d.]+k?) cache write)?(?:, (?P<hit>[\d.]+k?) cache hit)?"
    r", (?P<received>[\d.]+k?) received\.(?: Cost: \$(?P<cost>[\d.]+) message)?"
)
_COST = re.compile(r"^Cost: \$(?P<cost>[\d.]+) message")
_MODEL = re.compile(r"^Model: (?P<model>\S+) with (?P<format>\S+) edit format")
_PROVIDER_ERROR = re.compile(r"^litellm\.\w+:")
_FATAL = ("Empty response received from LLM",)  # aider's own words for a reply it could not use


def _tokens(text: str | None) -> int:
    if not text:
        return 0
    return round(float(text[:-1]) * 1000) if text.endswith("k") else int(float(text))


def _model_of(name: str) -> str:
    return name.split("/", 1)[1] if "/" in name else name


class AiderParser:
    """stdout: usage and model-request errors, as they come. The verdict is taken from the chat history."""

    def __init__(self) -> None:
        self.model: str | None = None
        self.pending: dict[str, Any] | None = None  # a Tokens line whose cost may follow on the next line

    def feed(self, stream: str, line: str) -> list[AgentSignal]:
        line = line.rstrip()
        if stream == "stderr":
            return [error(line)] if line.startswith("aider: error:") else []  # argparse's complaint
        out: list[AgentSignal] = []
        if self.pending is not None:
            cost = _COST.match(line)
            out.append(self._flush(float(cost["cost"]) if cost else None))
            if cost:
                return out
        if m := _MODEL.match(line):
            self.model = _model_of(m["model"])
        elif m := _TOKENS.match(line):
            self.pending = {
                "input": _tokens(m["sent"]) + _tokens(m["write"]),
                "output": _tokens(m["received"]),
                "cached": _tokens(m["hit"]),
            }
            if m["cost"]:
                out.append(self._flush(float(m["cost"])))
        elif _PROVIDER_ERROR.match(line):
            out.append(error(line, provider=True))
        elif line.startswith(_FATAL):
            out.append(error(line, provider=True))
        return out

    def _flush(self, cost: float | None) -> AgentSignal:
        assert self.pending is not None
        p, self.pending = self.pending, None
        return usage(model=self.model, input=p["input"], output=p["output"], cached=p["cached"], cost=cost)

    def finish(self) -> list[AgentSignal]:
        return [self._flush(None)] if self.pending is not None else []


def read_chat(text: str, session: str | None = None, *, require_change: bool = True) -> list[AgentSignal]:
    """Signals from one run's part of aider's chat history markdown (``--chat-history-file``). A reply that
    applied no edit is a failure when ``require_change``."""
    out: list[AgentSignal] = []
    if session:
        out.append(AgentSignal(SignalKind.SESSION, {"sessionId": session}))
    user: list[str] = []
    reply: list[str] = []
    last_reply: str | None = None
    edit_format: str | None = None
    edits: list[str] = []
    commits: list[str] = []
    failure: str | None = None  # an error no later reply made good
    notes: list[str] = []

    def flush() -> None:
        nonlocal last_reply
        if user:
            out.append(AgentSignal(SignalKind.MESSAGE, {"role": "user", "text": clip("\n".join(user).strip())}))
            user.clear()
        body = "\n".join(reply).strip()
        reply.clear()
        if body:
            last_reply = body
            out.append(AgentSignal(SignalKind.MESSAGE, {"role": "assistant", "text": clip(body)}))

    # aider writes its own output as "> TEXT  " (only the first line of a multi-line message gets the "> ", the
    # last ends with two spaces), the user's lines as "#### LINE  ", and the reply as it is, between blank lines
    # (a reply starting with a "> quote" line is taken for aider's output).
    lines = text.splitlines()
    started, in_reply, i = False, False, 0
    while i < len(lines):
        raw = lines[i]
        i += 1
        if raw.startswith("# aider chat started at"):
            started, in_reply = True, False
            continue
        if not started:
            continue
        if raw.startswith("#### ") and raw.endswith("  "):
            if reply:
                flush()
            user.append(raw[5:].rstrip())
            in_reply = False
            continue
        if raw.startswith(">") and (raw.endswith("  ") or not in_reply):
            flush()
            in_reply = False
            message = [raw[1:].strip()]
            while not raw.endswith("  ") and i < len(lines):  # the rest of a multi-line message
                raw = lines[i]
                i += 1
                message.append(raw.rstrip())
            line, whole = message[0], "\n".join(message).strip()
            if m := _MODEL.match(line):
                edit_format = m["format"]
            elif line.startswith("Applied edit to "):
                path = line[len("Applied edit to ") :]
                call = f"edit-{len(edits) + 1}"
                edits.append(path)
                edit = {"id": call, "name": "edit", "input": {"path": path, "format": edit_format}}
                out.append(AgentSignal(SignalKind.TOOL_CALL, edit))
                out.append(AgentSignal(SignalKind.TOOL_RESULT, {"id": call, "output": line, "isError": False}))
            elif line.startswith("Commit "):
                commits.append(line[len("Commit ") :])
            elif line.startswith("Tokens: "):
                failure = None  # a model reply came after any earlier error (a retry that worked)
            elif _PROVIDER_ERROR.match(line) or line.startswith(_FATAL):
                failure = whole
            elif line.startswith(("The LLM did not conform", "Unable to commit", "Malformed")):
                notes.append(line)
            continue
        if not raw.strip() and not in_reply:
            continue
        if user:
            flush()
        in_reply = True
        reply.append(raw.rstrip())
    flush()
    if not started:
        return out
    if failure is not None:
        out.append(final(last_reply, success=False, reason=f"aider: {failure}"))
    elif edits:
        what = f"aider applied {len(edits)} edit(s) to {', '.join(dict.fromkeys(edits))}"
        what += f", {len(commits)} commit(s)" if commits else (f" ({notes[-1]})" if notes else ", no commit")
        out.append(final(last_reply, success=True, reason=what))
    elif last_reply is not None:
        why = f" ({notes[-1]})" if notes else ""
        out.append(final(last_reply, success=not require_change, reason=f"aider replied without editing a file{why}"))
    else:
        out.append(final(None, success=False, reason="aider ended without a reply from the model"))
    return out


class AiderAdapter(CliAdapter):
    name = "aider"
    wire_apis: tuple[WireApi, ...] = ("openai-chat", "anthropic")
    resumable = True
    executable = "aider"
    venv = "aider"
    extra_options = {
        "files": "files (relative to the workspace) to add to the chat for editing (default: none; aider can "
        "create files and asks to add the ones it edits)",
        "read": "files to add read-only (a list)",
        "edit_format": f"aider's edit format, one of {', '.join(EDIT_FORMATS)} (default: whole)",
        "auto_commits": "let aider commit its edits (default true)",
        "require_change": "fail a run that changed no file (default true)",
        "request_timeout": "seconds before aider gives up on one model request (default: litellm's)",
    }

    def validate_extra(self, options: dict[str, Any]) -> list[FieldError]:
        errors = []
        for key in ("files", "read"):
            value = options.get(key)
            if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) and v for v in value)):
                errors.append(FieldError(f"config.{key}", "must be a list of file paths"))
        if "edit_format" in options and options["edit_format"] not in EDIT_FORMATS:
            errors.append(FieldError("config.edit_format", f"must be one of: {', '.join(EDIT_FORMATS)}"))
        for key in ("auto_commits", "require_change"):
            if key in options and not isinstance(options[key], bool):
                errors.append(FieldError(f"config.{key}", "must be true or false"))
        timeout = options.get("request_timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
            errors.append(FieldError("config.request_timeout", "must be a number of seconds > 0"))
        return errors

    def launch(self, request: LaunchRequest) -> LaunchSpec:
        ep = self.require_endpoint(request)
        if ep.kind not in _PREFIX:
            raise AgentSpawnError(
                f"aider cannot talk to a {ep.kind} provider ({ep.name}); it speaks {', '.join(self.wire_apis)}"
            )
        cfg, opts, out = request.config_dir, request.options, request.output_dir
        model = f"{_PREFIX[ep.kind]}/{ep.model}"
        if request.resume_session:
            chat = Path(request.resume_session)
        else:
            chat = out / f"chat-{uuid.uuid4().hex[:12]}.md"
        try:
            offset = chat.stat().st_size
        except OSError:
            offset = 0
        params: dict[str, Any] = {"api_base": ep.base_url, "api_key": ep.api_key or "unused", "max_retries": 0}
        settings = [{"name": model, "extra_params": params}]
        argv = _python_of(self.binary(request.tools_dir, opts), request.cli_retries)
        argv += ["--model", model, "--weak-model", model, "--model-settings-file", str(cfg / "model-settings.yml")]
        argv += ["--edit-format", str(opts.get("edit_format", "whole")), "--yes-always", "--no-stream", "--no-pretty"]
        argv += ["--no-fancy-input", "--no-check-update", "--no-show-model-warnings", "--no-show-release-notes"]
        argv += ["--analytics-disable", "--no-detect-urls", "--no-gitignore", "--map-tokens", "0"]
        argv += ["--chat-history-file", str(chat), "--input-history-file", str(cfg / "input.history")]
        argv += ["--llm-history-file", str(out / "llm-history.txt")]
        if request.resume_session:
            argv.append("--restore-chat-history")
        if opts.get("auto_commits") is False:
            argv.append("--no-auto-commits")
        if opts.get("request_timeout"):
            argv += ["--timeout", str(opts["request_timeout"])]
        for path in opts.get("read", []):
            argv += ["--read", path]
        argv += [*opts.get("args", []), f"--message={_prompt(request.task)}", *opts.get("files", [])]
        env = self.base_env(request)
        env.update(
            HOME=str(cfg),
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            COLUMNS="100000",  # rich wraps aider's lines at 80 columns otherwise
            BROWSER="true",  # aider offers to open URLs from error messages; yes-always would say yes
            PYTHONUNBUFFERED="1",
        )
        env.update(_git_identity())
        files = {
            cfg / "model-settings.yml": json.dumps(settings, indent=2),  # JSON is YAML
            # a non-empty price cache stops aider fetching litellm's price list from GitHub on every start
            cfg / ".aider" / "caches" / "model_prices_and_context_window.json": json.dumps({"_godel": {}}),
            # in the output dir, which also makes sure it exists before aider appends to its history there
            out / RUN_FILE: json.dumps({"chat": str(chat), "offset": offset}),
        }
        return LaunchSpec(argv=argv, env=env, cwd=request.workspace, files=files)

    def parser(self) -> AiderParser:
        return AiderParser()

    def collect(self, request: LaunchRequest) -> list[AgentSignal]:
        try:
            run = json.loads((request.output_dir / RUN_FILE).read_text())
            chat, offset = Path(run["chat"]), int(run["offset"])
            with chat.open("rb") as f:
                f.seek(offset)
                text = f.read().decode("utf-8", "replace")
        except (OSError, ValueError, KeyError, TypeError):
            return []  # never launched, or aider wrote no history: judged from the stream alone
        opts = request.options
        require = opts.get("require_change", opts.get("edit_format") not in ("ask", "context"))
        return read_chat(text, str(chat), require_change=require)


def _python_of(binary: str, retries: int) -> list[str]:
    """The command that runs aider's own Python with the retry bound: the interpreter of its script's ``#!``
    line. A binary that is not a Python script is run as it is (then aider's retries are not bounded)."""
    try:
        with open(binary, "rb") as f:
            first = f.readline(512).decode("utf-8", "replace").strip()
    except OSError:
        first = ""
    if first.startswith("#!") and "python" in first:
        # -I: no current directory on sys.path (the workspace must not shadow aider's modules), no PYTHON* vars
        bound = 0.125 * 2 ** max(retries, 0)  # retry n waits 0.125 * 2**n s, and only while that is <= bound
        return [*shlex.split(first[2:]), "-I", "-u", "-c", _BOOT, str(bound)]
    return [binary]


def _git_identity() -> dict[str, str]:
    """aider commits as the user would: HOME is the private config dir, so point git at the user's global
    config and pass an identity given in the server's environment."""
    env = {k: os.environ[k] for k in _GIT_IDENTITY if os.environ.get(k)}
    home = os.environ.get("HOME")
    if os.environ.get("GIT_CONFIG_GLOBAL"):
        env["GIT_CONFIG_GLOBAL"] = os.environ["GIT_CONFIG_GLOBAL"]
    elif home and (Path(home) / ".gitconfig").is_file():
        env["GIT_CONFIG_GLOBAL"] = str(Path(home) / ".gitconfig")
    return env


def _prompt(task: str) -> str:
    # aider runs a message starting with "/" or "!" as one of its commands (/run, /add, a shell command ...)
    return " " + task if task.startswith(("/", "!")) else task
