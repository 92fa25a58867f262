"""What both sites share: identity, login, sessions, CSRF, rendering and headers.

A :class:`Site` belongs to one node. Its database work runs on the node's
database thread (``Node.db``), so a page never blocks the event loop that also
carries the node's messages, and never races the node's own transactions.
"""

from __future__ import annotations

import hmac
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import jinja2
from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from sqlalchemy import Engine
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException

from caroni import __version__
from caroni.node.runtime import Node
from caroni.store.summary import summarize
from caroni.web import auth, formatting
from caroni.web.states import states_css
from caroni.web.throttle import LoginThrottle
from caroni.web.values import clip

T = TypeVar("T")

HERE = Path(__file__).parent
LIVE_HEADER = "X-Caroni-Live"  # sent by live.js: answer 401 instead of a login redirect
STAMP_HEADER = "X-Caroni-Stamp"

# Pages may load only their own scripts and styles. The API docs page (Swagger UI,
# served from the site itself) runs an inline start-up script, so it is left out.
_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


_REASONS = {400: "Bad request", 403: "Forbidden", 404: "Not found", 405: "Not allowed"}


@dataclass(frozen=True, slots=True)
class SiteInfo:
    """Who this site is: shown in every page header."""

    role: str  # "manager" or "agent"
    name: str
    key: str

    @property
    def key_id(self) -> str:
        return self.key.rsplit(".", 1)[-1]

    @property
    def cookie_name(self) -> str:
        # Cookies are per host, not per port: nodes on one host need distinct names,
        # or logging into one would log you out of the other.
        return f"caroni_session_{self.key_id[:8]}"

    @property
    def login_cookie_name(self) -> str:
        return f"caroni_login_{self.key_id[:8]}"


class LoginRequired(Exception):
    """Raised by page handlers' auth; answered with a redirect to the login page."""

    def __init__(self, live: bool) -> None:
        self.live = live


class Site:
    """One node's site: its identity, its database thread and its templates."""

    def __init__(self, info: SiteInfo, node: Node, engine: Engine, nav: list[tuple[str, str]]):
        self.info = info
        self.node = node
        self.engine = engine
        self.nav = nav
        self.login_throttle = LoginThrottle()
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters.update(
            when=formatting.when,
            since=formatting.since,
            duration=formatting.duration,
            short=formatting.short,
            urlpart=formatting.urlpart,
            clip=clip,
        )
        env.globals.update(version=__version__)
        self.templates = env

    # --- database ---------------------------------------------------------------------

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` on the node's database thread."""
        return await self.node.db(_with_connection, self.engine, fn, args, False)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` in a transaction on the node's database thread."""
        return await self.node.db(_with_connection, self.engine, fn, args, True)

    # --- auth ---------------------------------------------------------------------------

    async def session(self, request: Request) -> auth.Session:
        """The logged-in session, or LoginRequired."""
        token = request.cookies.get(self.info.cookie_name)
        found = await self.read(auth.session_for, token) if token else None
        if found is None:
            raise LoginRequired(live=request.headers.get(LIVE_HEADER) == "1")
        return found

    async def form(self, request: Request, session: auth.Session) -> FormData:
        """The posted form, once its CSRF token is the session's."""
        form = await request.form()
        given = form.get("csrf")
        if not isinstance(given, str) or not same_secret(given, session.csrf):
            raise HTTPException(403, "the form is stale or did not come from this site; reload it")
        # No field of any form can be a NUL (PostgreSQL refuses it in text, bash in
        # scripts, exec in the environment): refused here for every form at once.
        if any("\x00" in str(value) for _, value in form.multi_items()):
            raise HTTPException(400, "a form field contains a NUL character; remove it")
        return form

    async def api_user(self, credentials: HTTPAuthorizationCredentials | None) -> str:
        """The user an API bearer token belongs to, or 401."""
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(
                401, "an API token is required", headers={"WWW-Authenticate": "Bearer"}
            )
        username = await self.write(auth.user_for_api_token, credentials.credentials)
        if username is None:
            raise HTTPException(
                401,
                "unknown API token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return username

    # --- rendering ------------------------------------------------------------------------

    async def live_list(
        self,
        request: Request,
        template: str,
        query: Callable[..., Any],
        chosen: str,
        q: str,
        offset: int,
        *,
        fragment: bool,
        since: str,
        **context: Any,
    ) -> Response:
        """A filtered, searched, paged list that updates itself.

        ``query(conn, chosen, search, offset)`` returns a listing with a ``stamp``.
        The whole page is ``template``; with ``fragment`` only the list is rendered
        (the same template name with a leading ``_``), or 204 when it is unchanged
        since the stamp ``since``.
        """
        session = await self.session(request)
        listing = await self.read(query, chosen, q.strip(), offset)
        if fragment and since == listing.stamp:
            return Response(status_code=204)
        folder, _, page = template.rpartition("/")
        return self.render(
            request,
            f"{folder}/_{page}" if fragment else template,
            session=session,
            stamp=listing.stamp,
            listing=listing,
            q=q,
            offset=offset,
            **context,
        )

    def render(
        self,
        request: Request,
        template: str,
        *,
        session: auth.Session | None = None,
        status_code: int = 200,
        stamp: str = "",
        **context: Any,
    ) -> HTMLResponse:
        page = self.templates.get_template(template).render(
            request=request,
            site=self.info,
            nav=self.nav,
            session=session,
            path=request.url.path,
            stamp=stamp,
            server_now=time.time(),
            **context,
        )
        headers = {STAMP_HEADER: stamp} if stamp else None
        return HTMLResponse(page, status_code=status_code, headers=headers)


def _with_connection(
    engine: Engine, fn: Callable[..., T], args: tuple[Any, ...], transaction: bool
) -> T:
    if transaction:
        with engine.begin() as conn:
            return fn(conn, *args)
    with engine.connect() as conn:
        return fn(conn, *args)


bearer = HTTPBearer(auto_error=False, description="An API token from `caroni user token`.")


def new_app(site: Site, *, api: bool) -> FastAPI:
    """The FastAPI app with what every site has: login, logout, assets, headers."""
    settings: dict[str, Any] = {
        "title": f"Caroni {site.info.role} {site.info.name}",
        "version": __version__,
        "description": (
            "The HTTP API of a Caroni manager: list templates, start workflows, follow "
            "them and cancel them. Authenticate with `Authorization: Bearer <token>`; "
            "make a token with `caroni user token USERNAME --db ...`."
        ),
        "redoc_url": None,
    }
    if api:
        # The docs page's scripts come from the site itself, not from a CDN: sites
        # often run where the internet is out of reach.
        app = FastAPIOffline(
            openapi_url="/api/openapi.json",
            docs_url="/api/docs",
            static_url="/api/docs/assets",
            **settings,
        )
    else:
        app = FastAPI(openapi_url=None, docs_url=None, **settings)
    app.state.site = site
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if not request.url.path.startswith("/api/docs"):
            response.headers.setdefault("Content-Security-Policy", _CSP)
            response.headers.setdefault("X-Frame-Options", "DENY")
        if request.url.path.startswith("/api/") or "text/html" in response.headers.get(
            "content-type", ""
        ):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        if exc.live:
            return PlainTextResponse("log in again", status_code=401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(
            "/login?" + urllib.parse.urlencode({"next": target}), status_code=303
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
            )
        response = site.render(
            request,
            "error.html",
            status_code=exc.status_code,
            title=f"{exc.status_code} {_REASONS.get(exc.status_code, 'Error')}",
            message=str(exc.detail),
        )
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError) -> Response:
        if request.url.path.startswith("/api/"):
            return await request_validation_exception_handler(request, exc)
        return site.render(
            request,
            "error.html",
            status_code=400,
            title="400 Bad request",
            message=validation_message(exc),
        )

    @app.get("/states.css", include_in_schema=False)
    async def state_colors() -> Response:
        return Response(states_css(), media_type="text/css")

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"role": site.info.role, "key": site.info.key, "status": "ok"}

    @app.get("/dead-letters", include_in_schema=False)
    async def dead_letters_page(request: Request) -> Response:
        """What this node set aside, and why (bad input never disappears silently)."""
        session = await site.session(request)
        summary = await site.read(summarize, 50)
        return site.render(
            request, "dead_letters.html", session=session, title="Dead letters", summary=summary
        )

    from caroni.web.users import add_user_routes  # it builds on this module

    add_user_routes(app, site, api=api)

    from caroni.web.login import add_login_routes  # it builds on this module

    add_login_routes(app, site)

    return app


def validation_message(exc: RequestValidationError) -> str:
    """What was wrong with a request's parameters, in a line: ``offset: ...; q: ...``."""
    problems = []
    for error in exc.errors():
        where = str(error["loc"][-1]) if error.get("loc") else "request"
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(problems) or "the request is not valid"


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison (as bytes: compare_digest refuses non-ASCII str)."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
