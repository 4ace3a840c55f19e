"""`tally ui`: the Starlette application and the uvicorn server that runs it.

Routes (every one behind the guard of cas/ui/security.py):

    GET  /                       the page (cas/ui/static/index.html); sets the cookie
    GET  /static/{file}          the page's own JavaScript and CSS (package files only)
    GET  /vendor/{file}.js       the vendored Vega libraries (cas/plots/vendor/)
    GET  /api/table              ?filter= &sort= &offset= &limit=   one page of rows
    GET  /api/experiment         ?spec=                             one record
    GET  /api/diff               ?spec=A&spec=B...                  side by side
    GET  /api/plots              ?spec=A&spec=B...                  overlaid plots
    GET  /api/live                                                  running and queued
    POST /api/restore|promote|remove|queue   JSON body              the actions

Library errors become JSON `{"error", "message", "hint"}` with an HTTP status from
their class (usage 400, not found 404, conflict or lock 409, corruption 500).
Handlers are plain functions: Starlette runs them in its thread pool, so a slow
request (plots of large files) does not stop the others.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import webbrowser
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from cas.core import errors
from cas.plots import render
from cas.ui import api
from cas.ui import security
from cas.ui.listing import ListingCache

if TYPE_CHECKING:
    from cas.workspace.project import Project

DEFAULT_HOST = "127.0.0.1"
MAX_BODY = 64 * 1024  # bytes of an action's JSON body; real ones are < 1 KiB
VENDOR = frozenset(render.VENDOR_SCRIPTS)
STATUS = ((errors.UsageError, 400), (errors.NotFound, 404), (errors.Conflict, 409),
          (errors.LockBusy, 409), (errors.TallyError, 500))


def static_dir() -> Path:
    return Path(str(resources.files("cas.ui").joinpath("static")))


class GuardMiddleware:
    """Refuses any request without the right Host and token (pure ASGI: no buffering)."""

    def __init__(self, app: ASGIApp, guard: security.Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if not self.guard.host_ok(request.headers.get("host")):
            await PlainTextResponse("unknown Host header", status_code=403)(scope, receive, send)
            return
        token = self.guard.request_token(query=request.query_params, headers=request.headers,
                                         cookies=request.cookies)
        if not self.guard.token_ok(token):
            await PlainTextResponse("a valid token is required: open the URL `tally ui` printed",
                                    status_code=403)(scope, receive, send)
            return
        if request.method not in ("GET", "HEAD", "POST"):
            await PlainTextResponse("method not allowed", status_code=405)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _error(exc: errors.TallyError) -> JSONResponse:
    status = next(code for cls, code in STATUS if isinstance(exc, cls))
    return JSONResponse({"error": type(exc).__name__, "message": exc.message, "hint": exc.hint},
                        status_code=status)


def create_app(project: Project, guard: security.Guard) -> Starlette:
    """The application serving `project`, behind `guard`."""
    cache = ListingCache(project)
    action_lock = threading.Lock()  # one action at a time: they write the workspace and refs

    def answer(fn: Callable[[], Any]) -> Response:
        try:
            return JSONResponse(fn())
        except errors.TallyError as exc:
            return _error(exc)

    def index(request: Request) -> Response:
        resp = FileResponse(static_dir() / "index.html", media_type="text/html")
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'")
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.set_cookie(security.cookie_name(guard.port), guard.token, httponly=True,
                        samesite="strict", path="/")
        return resp

    def vendor(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in VENDOR:
            return PlainTextResponse("not found", status_code=404)
        return Response(render.vendor_script(name), media_type="text/javascript",
                        headers={"Cache-Control": "private, max-age=86400"})

    def q_int(request: Request, key: str, default: int) -> int:
        try:
            return int(request.query_params.get(key, default))
        except ValueError:
            raise errors.UsageError(f"{key} must be an integer") from None

    def table(request: Request) -> Response:
        qp = request.query_params
        t0 = time.perf_counter()
        resp = answer(lambda: api.table(cache, filter=qp.get("filter"), sort=qp.get("sort"),
                                        offset=q_int(request, "offset", 0),
                                        limit=q_int(request, "limit", api.PAGE_SIZE)))
        # The server's own time, for the browser's devtools and bench/ui_table.py.
        resp.headers["Server-Timing"] = f"table;dur={(time.perf_counter() - t0) * 1000:.1f}"
        return resp

    def experiment(request: Request) -> Response:
        return answer(lambda: api.experiment(project, request.query_params.get("spec", "")))

    def diff(request: Request) -> Response:
        return answer(lambda: api.diff(project, request.query_params.getlist("spec")))

    def plots(request: Request) -> Response:
        return answer(lambda: api.plots(project, request.query_params.getlist("spec")))

    def live(request: Request) -> Response:
        return answer(lambda: api.live(project, cache))

    async def action(request: Request) -> Response:
        why = guard.action_ok(method=request.method, headers=request.headers)
        if why is not None:
            return JSONResponse({"error": "Forbidden", "message": why, "hint": None}, status_code=403)
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return JSONResponse({"error": "UsageError", "message": "request body too large",
                                 "hint": None}, status_code=413)
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            return _error(errors.UsageError("the request body must be a JSON object"))
        name = request.path_params["name"]
        run = ACTIONS.get(name)
        if run is None:
            return PlainTextResponse("not found", status_code=404)

        def locked() -> Any:
            with action_lock:
                try:
                    return run(project, body)
                finally:
                    cache.invalidate()
        from starlette.concurrency import run_in_threadpool
        try:
            return JSONResponse(await run_in_threadpool(locked))
        except errors.TallyError as exc:
            return _error(exc)

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/vendor/{name}", vendor, methods=["GET"]),
        Route("/api/table", table, methods=["GET"]),
        Route("/api/experiment", experiment, methods=["GET"]),
        Route("/api/diff", diff, methods=["GET"]),
        Route("/api/plots", plots, methods=["GET"]),
        Route("/api/live", live, methods=["GET"]),
        Route("/api/{name}", action, methods=["POST", "GET"]),
        Mount("/static", app=StaticFiles(directory=static_dir()), name="static"),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(GuardMiddleware, guard=guard)
    return app


def _text(body: dict[str, Any], key: str) -> str:
    v = body.get(key)
    if not isinstance(v, str) or not v:
        raise errors.UsageError(f"{key!r} must be a non-empty string")
    return v


def _texts(body: dict[str, Any], key: str) -> list[str]:
    v = body.get(key)
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise errors.UsageError(f"{key!r} must be a list of strings")
    return v


ACTIONS: dict[str, Callable[[Any, dict[str, Any]], Any]] = {
    "restore": lambda p, b: api.restore(p, _text(b, "spec"), force=b.get("force") is True),
    "promote": lambda p, b: api.promote(p, _text(b, "spec"), branch_prefix=b.get("branch_prefix") or None),
    "remove": lambda p, b: api.remove(p, _texts(b, "specs")),
    "queue": lambda p, b: api.queue_variation(p, _text(b, "spec"), set_params=_texts(b, "set"),
                                              name=b.get("name") or None),
}


# -- the server --------------------------------------------------------------------------

def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); port 0 picks a free one.

    Raises:
        UsageError: the address cannot be bound (in use, not this machine's).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise errors.UsageError(f"cannot listen on {host}:{port}: {exc.strerror}",
                                hint="choose another --port, or leave it out for a free one") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(host: str, port: int, token: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/?{security.QUERY}={token}"


def serve(project: Project, *, host: str = DEFAULT_HOST, port: int = 0, open_browser: bool = True,
          notify: Callable[[str], None] | None = None, token: str | None = None) -> None:
    """Run the UI for `project` until interrupted (Ctrl-C).

    Prints (through `notify`, default stderr) the URL with the token, and a warning
    when `host` is not a loopback address. Opens the browser unless told not to.

    Raises:
        UsageError: the address cannot be bound.
    """
    import uvicorn

    say = notify or (lambda m: print(m, file=sys.stderr, flush=True))
    sock = bind(host, port)
    port = sock.getsockname()[1]
    token = token or security.new_token()
    guard = security.Guard.for_server(token=token, host=host, port=port)
    app = create_app(project, guard)
    url = url_of(host, port, token)
    if not security.is_loopback(host):
        say(f"warning: listening on {host}, not only this machine: anyone who can reach it "
            "and has the token can read and change your experiments")
    say(f"tally ui: {url}")
    if open_browser:
        threading.Timer(0.5, lambda: webbrowser.open(url)).start()
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    server.run(sockets=[sock])


__all__ = ["create_app", "serve", "bind", "url_of", "GuardMiddleware", "ACTIONS"]
