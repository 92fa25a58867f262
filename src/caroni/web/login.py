"""Logging in and out of a node's site: the form, its double-submit token, the
throttle, and the session cookie."""

from __future__ import annotations

import asyncio
import secrets

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from caroni.web import auth
from caroni.web.site import Site, same_secret


def add_login_routes(app: FastAPI, site: Site) -> None:
    """``/login`` (the form and its post) and ``/logout``."""

    @app.get("/login", include_in_schema=False)
    async def login_page(request: Request, next: str = "/") -> Response:
        return login_form(site, request, next, error="")

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = await request.form()
        username = str(form.get("username", "")).strip()
        password = str(form.get("password", ""))
        target = safe_next(str(form.get("next", "/")))
        expected = request.cookies.get(site.info.login_cookie_name, "")
        given = str(form.get("csrf", ""))
        if not expected or not same_secret(expected, given):
            return login_form(
                site, request, target, error="The login form expired; please try again."
            )
        address = request.client.host if request.client else ""
        # Counted before the slow check, so that guesses sent at once are refused too.
        wait = site.login_throttle.attempt(username, address)
        if wait > 0:
            return login_form(
                site,
                request,
                target,
                error=f"Too many login attempts; try again in {wait:.0f} s.",
                status_code=429,
            )
        # A name no user can have is not looked up (PostgreSQL refuses NUL in text).
        stored = (
            await site.read(auth.password_hash_of, username)
            if auth.USERNAME.fullmatch(username)
            else None
        )
        # scrypt is slow on purpose: keep it off the event loop and the DB thread.
        if not await asyncio.to_thread(auth.check_login, stored, password):
            return login_form(
                site, request, target, error="Wrong user name or password.", status_code=401
            )
        site.login_throttle.succeeded(username, address)
        token, _ = await site.write(auth.new_session, username)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            site.info.cookie_name,
            token,
            max_age=auth.SESSION_SECONDS,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
            path="/",
        )
        response.delete_cookie(site.info.login_cookie_name, path="/login")
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        session = await site.session(request)
        await site.form(request, session)
        token = request.cookies.get(site.info.cookie_name, "")
        await site.write(auth.end_session, token)
        response = RedirectResponse("/login?notice=logged-out", status_code=303)
        response.delete_cookie(site.info.cookie_name, path="/")
        return response


def login_form(
    site: Site, request: Request, target: str, *, error: str, status_code: int = 200
) -> Response:
    # Double-submit token: a login form posted from another site has no way to
    # know the value of our cookie.
    csrf = secrets.token_urlsafe(24)
    response = site.render(
        request,
        "login.html",
        status_code=status_code,
        title="Log in",
        next=safe_next(target),
        csrf=csrf,
        error=error,
        notice=request.query_params.get("notice", ""),
    )
    response.set_cookie(
        site.info.login_cookie_name,
        csrf,
        max_age=3600,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/login",
    )
    return response


def safe_next(target: str) -> str:
    """Only a path on this site: never ``//evil.example`` or ``https://...``."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
