"""``ScriptedModel``: a real HTTP model server that replays a script, for tests and demos without an LLM.

It runs uvicorn in a background thread (``with ScriptedModel(script) as model``) or in the foreground
(``godel dev model``). Agent CLIs are separate processes, so only a real socket lets them talk to it; for the
same reason the log and the usage totals are kept here, where a test can read them after the agent exits.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from godel.testing.anthropic_messages import Messages
from godel.testing.gemini import GenerateContent, gemini_error, split_target
from godel.testing.openai_chat import ChatCompletions
from godel.testing.openai_responses import Responses
from godel.testing.script import Script, Turn, load_script, request_text
from godel.testing.wire import BadRequest, Dialect, Reply, Usage

STARTUP_TIMEOUT = 10.0


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the server saw it, and what it chose to answer."""

    path: str
    dialect: str
    # turn | commit-message | error | exhausted | no-match | bad-request | count-tokens | models
    outcome: str
    status: int
    model: str | None = None
    stream: bool = False
    tool_results: int | None = None
    turn: int | None = None
    usage: Usage | None = None
    body: Any = None
    query: str = ""  # the query string, as sent

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ScriptedModel:
    def __init__(
        self,
        script: Script | Sequence[Any] | dict[str, Any] | str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: str | Path | None = None,
    ) -> None:
        self.script = load_script(script)
        self.host = host
        self.port = port
        self.log_path = Path(log_path) if log_path is not None else None
        self._lock = threading.Lock()
        self._requests: list[LoggedRequest] = []
        self._credentials: list[str] = []
        self._usage = Usage(0, 0)
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.app = self._build_app()

    # -- what tests read -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server's root; Anthropic clients take this (they add ``/v1`` themselves)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ending in ``/v1``."""
        return f"{self.url}/v1"

    @property
    def requests(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def credentials(self) -> list[str]:
        """The ``x-api-key`` or ``Authorization`` header of every POST, in order ("" when there was none)."""
        with self._lock:
            return list(self._credentials)

    @property
    def usage_reported(self) -> Usage:
        """The usage summed over every reply that reported some."""
        with self._lock:
            return self._usage

    # -- lifecycle -------------------------------------------------------------------------------------

    def bind(self) -> None:
        """Take the port now (a free one when ``port`` is 0) so the URL is known before serving."""
        if self._socket is not None:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self.port = sock.getsockname()[1]
        # A short grace period: a request parked in a scripted delay must not hold up a test's teardown.
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)

    def serve_forever(self) -> None:
        """Serve in this thread until SIGINT/SIGTERM, which uvicorn turns into a clean shutdown."""
        self.bind()
        assert self._server is not None and self._socket is not None
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._close_socket()

    def start(self) -> Self:
        self.bind()
        server, sock = self._server, self._socket
        assert server is not None and sock is not None
        # uvicorn installs no signal handlers off the main thread, so the host process keeps its own.
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"scripted-model:{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the scripted model server did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=STARTUP_TIMEOUT)
            self._thread = None
        self._close_socket()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _close_socket(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._server = None

    # -- the app ---------------------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        def answer(dialect: Dialect) -> Callable[[Request], Any]:
            async def endpoint(request: Request) -> Response:
                return await self._answer(request, dialect)

            return endpoint

        messages = Messages()

        async def count_tokens(request: Request) -> Response:
            return await self._count_tokens(request, messages)

        return Starlette(
            routes=[
                Route("/v1/chat/completions", answer(ChatCompletions()), methods=["POST"]),
                Route("/v1/responses", answer(Responses()), methods=["POST"]),
                Route("/v1/messages", answer(messages), methods=["POST"]),
                Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                # Gemini puts the model and the method in the path: /v1beta/models/MODEL:streamGenerateContent.
                Route("/v1beta/models/{target:path}", self._gemini, methods=["POST"]),
                # Claude Code probes the root with HEAD before its first call.
                Route("/", self._root, methods=["GET", "HEAD"]),
            ]
        )

    async def _gemini(self, request: Request) -> Response:
        model, method = split_target(request.path_params["target"])
        if method in ("generateContent", "streamGenerateContent"):
            return await self._answer(request, GenerateContent(model, stream=method == "streamGenerateContent"))
        if method == "countTokens":
            return await self._count_tokens(request, GenerateContent(model), total_key="totalTokens")
        self._log(LoggedRequest(request.url.path, "gemini", "bad-request", 404, model=model or None))
        return gemini_error(404, f"scripted model: no Gemini method {method!r}")

    async def _root(self, request: Request) -> Response:
        return JSONResponse({"service": "godel scripted model", "models": list(self.script.models)})

    async def _models(self, request: Request) -> Response:
        models = [
            {"id": m, "object": "model", "type": "model", "created": 0, "created_at": "1970-01-01T00:00:00Z",
             "owned_by": "godel", "display_name": m}
            for m in self.script.models
        ]  # fmt: skip
        self._log(LoggedRequest(request.url.path, "models", "models", 200))
        # One body for both SDKs: OpenAI reads ``object``/``data``, Anthropic's pager reads ``has_more`` and ids.
        first, last = (models[0]["id"], models[-1]["id"]) if models else (None, None)
        return JSONResponse({"object": "list", "data": models, "has_more": False, "first_id": first, "last_id": last})

    async def _read(self, request: Request) -> Any:
        with self._lock:  # which credential each request came with (a gateway must send the provider's own)
            self._credentials.append(
                request.headers.get("x-api-key") or request.headers.get("authorization")
                or request.headers.get("x-goog-api-key") or request.query_params.get("key") or ""
            )  # fmt: skip
        raw = await request.body()
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise BadRequest("the request body is not valid JSON") from exc

    async def _count_tokens(self, request: Request, dialect: Dialect, *, total_key: str = "input_tokens") -> Response:
        path = request.url.path
        body: Any = None
        try:
            body = await self._read(request)
            inbound = dialect.inspect(body)
        except BadRequest as exc:
            self._log(LoggedRequest(path, dialect.name, "bad-request", 400, body=body))
            return dialect.error(400, str(exc))
        self._log(LoggedRequest(path, dialect.name, "count-tokens", 200, model=inbound.model, body=body))
        return JSONResponse({total_key: self.script.input_tokens_per_message * inbound.messages})

    async def _answer(self, request: Request, dialect: Dialect) -> Response:
        path = request.url.path
        body: Any = None
        try:
            body = await self._read(request)
            inbound = dialect.inspect(body)
        except BadRequest as exc:
            self._log(LoggedRequest(path, dialect.name, "bad-request", 400, body=body))
            return dialect.error(400, str(exc))
        seen = {"model": inbound.model, "stream": inbound.stream, "tool_results": inbound.tool_results, "body": body,
                "query": request.url.query}  # fmt: skip
        index: int | None = None
        if inbound.commit_message_call:
            # Answered outside the script: aider asks for these on its own schedule, not the agent's.
            turn, outcome = Turn(text=self.script.commit_message), "commit-message"
        else:
            index = self.script.turn_for(inbound.tool_results)
            if index is None:
                message = (
                    f"scripted model: the script has no turn for a request carrying {inbound.tool_results} "
                    f"tool results (it has {len(self.script.turns)} turns)"
                )
                self._log(LoggedRequest(path, dialect.name, "exhausted", 400, **seen))
                return dialect.error(400, message)
            picked = self.script.pick(index, request_text(body) if self.script.needs_text(index) else "")
            if picked is None:
                message = (
                    f"scripted model: no alternative of turn {index} matches the request (none of their `match` "
                    "strings occurs in its text, and there is no default alternative)"
                )
                self._log(LoggedRequest(path, dialect.name, "no-match", 400, turn=index, **seen))
                return dialect.error(400, message)
            turn, outcome = picked, "turn"
        if turn.error is not None:
            self._log(LoggedRequest(path, dialect.name, "error", turn.error.status, turn=index, **seen))
            await asyncio.sleep(turn.delay)
            return dialect.error(turn.error.status, turn.error.message)
        usage = Usage(self.script.input_tokens_per_message * inbound.messages, self.script.output_tokens_for(turn))
        serial = self._log(LoggedRequest(path, dialect.name, outcome, 200, turn=index, usage=usage, **seen))
        await asyncio.sleep(turn.delay)
        return dialect.reply(Reply(turn, inbound, usage, serial))

    def _log(self, entry: LoggedRequest) -> int:
        """Record a request; returns its serial number (1-based), used to make reply ids unique."""
        with self._lock:
            self._requests.append(entry)
            if entry.usage is not None:
                total = self._usage
                self._usage = Usage(
                    total.input_tokens + entry.usage.input_tokens, total.output_tokens + entry.usage.output_tokens
                )
            serial = len(self._requests)
            if self.log_path is not None:
                with self.log_path.open("a", encoding="utf-8") as log:
                    log.write(json.dumps(entry.as_dict()) + "\n")
        return serial
