"""Every site's Users page: who may log in to this node; adding and removing users,
changing one's own password and, where the site has the HTTP API, making oneself an
API token. (`caroni user` does the same from the command line, and makes the first
user.)"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request, Response
from fastapi.responses import RedirectResponse
from starlette.datastructures import FormData

from caroni.web import auth
from caroni.web.site import Site

NOTICES = {
    "user-added": "User added: they can log in now.",
    "user-removed": "User removed: their sessions and API tokens have ended.",
}


class _Refused(Exception):
    """What was asked cannot be done; shown on the page as the reason."""


def add_user_routes(app: FastAPI, site: Site, *, api: bool) -> None:
    """The Users page's routes; ``api``: the site has the HTTP API, so users may make
    themselves tokens for it."""

    async def page(
        request: Request,
        session: auth.Session,
        *,
        notice: str = "",
        error: str = "",
        password_error: str = "",
        username: str = "",
        token: str = "",
    ) -> Response:
        """The page, with what this request has to show (a notice, an error, a token)."""
        return site.render(
            request,
            "users.html",
            session=session,
            status_code=400 if error or password_error else 200,
            title="Users",
            users=await site.read(auth.usernames),
            api=api,
            notice=notice,
            error=error,
            password_error=password_error,
            username=username,
            token=token,
        )

    @app.get("/users", include_in_schema=False)
    async def users_page(request: Request) -> Response:
        session = await site.session(request)
        notice = NOTICES.get(request.query_params.get("notice", ""), "")
        return await page(request, session, notice=notice)

    @app.post("/users", include_in_schema=False)
    async def add_user(request: Request) -> Response:
        session = await site.session(request)
        form = await site.form(request, session)
        username = str(form.get("username", "")).strip()
        try:
            auth.check_username(username)  # before the (slow on purpose) hashing
            password_hash = await _new_password_hash(form)
            await site.write(auth.add_user, username, password_hash)
        except (_Refused, auth.UserError) as exc:
            return await page(request, session, error=str(exc), username=username)
        return RedirectResponse("/users?notice=user-added", status_code=303)

    @app.post("/users/remove", include_in_schema=False)
    async def remove_user(request: Request) -> Response:
        session = await site.session(request)
        form = await site.form(request, session)
        username = str(form.get("username", ""))
        if username == session.username:
            # So that at least one user is left; another user can remove this one.
            return await page(
                request, session, error="You cannot remove yourself; another user can."
            )
        try:
            await site.write(auth.remove_user, username)
        except auth.UserError as exc:
            return await page(request, session, error=str(exc))
        return RedirectResponse("/users?notice=user-removed", status_code=303)

    @app.post("/users/password", include_in_schema=False)
    async def change_password(request: Request) -> Response:
        session = await site.session(request)
        form = await site.form(request, session)
        try:
            password_hash = await _new_password_hash(form)
        except _Refused as exc:
            return await page(request, session, password_error=str(exc))
        # Ends every session of this user, this one too: log in with the new password.
        await site.write(auth.set_password, session.username, password_hash)
        response = RedirectResponse("/login?notice=password-changed", status_code=303)
        response.delete_cookie(site.info.cookie_name, path="/")
        return response

    if api:

        @app.post("/users/token", include_in_schema=False)
        async def new_token(request: Request) -> Response:
            session = await site.session(request)
            await site.form(request, session)
            token = await site.write(auth.new_api_token, session.username)
            # Shown on this response only: the database keeps just its hash.
            return await page(request, session, token=token)


async def _new_password_hash(form: FormData) -> str:
    password = str(form.get("password", ""))
    if not password:
        raise _Refused("The password is empty.")
    if password != str(form.get("confirm", "")):
        raise _Refused("The two passwords differ.")
    # scrypt is slow on purpose: keep it off the event loop and the database thread.
    return await asyncio.to_thread(auth.hash_password, password)
