"""Who may call Godel: ``godel login``/``logout``/``whoami``, ``godel user …`` (people, their roles and their API
keys), ``godel role …`` and ``godel audit …``.

Not to be confused with ``godel key``: that one makes the gateway's *virtual keys*, with which an agent or a script
calls a *model*. ``godel user key`` makes a person's *API key* (``godel_sk_…``), with which they call *Godel*.
"""

from __future__ import annotations

import getpass
import socket
from typing import Annotated, Any

import typer

from godel.cli import output
from godel.cli.context import JsonFlag, client, state, wants_json
from godel.cli.ids import resolve
from godel.cli.output import Column, print_json, print_line, print_record, print_table
from godel.client import GodelClient
from godel.client.credentials import forget_login, save_login
from godel.client.sync import default_url

user_app = typer.Typer(no_args_is_help=True, help="People who may call Godel: their roles, teams and API keys.")
user_key_app = typer.Typer(no_args_is_help=True, help="A user's API keys (godel_sk_…) for calling Godel's API.")
role_app = typer.Typer(no_args_is_help=True, help="Roles: the built-in ones and your own (resource:action:scope).")
audit_app = typer.Typer(no_args_is_help=True, help="The append-only audit log: list it, verify its hash chain.")
user_app.add_typer(user_key_app, name="key")

Roles = Annotated[list[str] | None, typer.Option("--role", help="A role (repeat for several): admin, operator, …")]


def login(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Argument(help="The server (default: GODEL_URL or the configured url).")] = None,
    user: Annotated[str | None, typer.Option("--user", "-u", help="Your user name (asked when not given).")] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="Store this API key instead of logging in with a password.")
    ] = None,
) -> None:
    """Log in to a server and remember it: an API key for this machine is made and saved (mode 0600) in
    ~/.config/godel/credentials.json; every later command to that URL uses it."""
    target = (url or state(ctx).url or default_url()).rstrip("/")
    if api_key is None:
        name = user or typer.prompt("user")
        password = getpass.getpass("password: ")
        with GodelClient(target, headers={"X-API-Key": ""}) as anonymous:
            tokens = anonymous.login(name, password)
        bearer = {"Authorization": f"Bearer {tokens['accessToken']}"}
        with GodelClient(target, headers=bearer) as session:
            made = session.create_api_key(name, name=f"godel login on {socket.gethostname()}")
        api_key = str(made["key"])
    with GodelClient(target, api_key=api_key) as checked:
        me = checked.me()
    path = save_login(target, api_key, me.get("name"))
    print_line(f"logged in to {target} as {me.get('name')} ({', '.join(me.get('roles') or [])}); key saved in {path}")


def logout(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Argument(help="The server (default: GODEL_URL or the configured url).")] = None,
) -> None:
    """Forget the key saved for a server."""
    target = (url or state(ctx).url or default_url()).rstrip("/")
    print_line(f"logged out of {target}" if forget_login(target) else f"no saved login for {target}")


def whoami(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Who the server says you are, with your roles and permissions."""
    me = client(ctx).me()
    if wants_json(ctx, json_out):
        print_json(me)
        return
    print_record(
        [
            ("user", me.get("id")),
            ("roles", ", ".join(me.get("roles") or [])),
            ("team", me.get("team")),
            ("via", me.get("authenticatedBy")),
            ("permissions", " ".join(me.get("permissions") or [])),
        ]
    )


USER_COLUMNS = (
    Column("name", "name"),
    Column("roles", "roles"),
    Column("team", "team"),
    Column("disabled", "disabled"),
    Column("created", "createdAt", "time"),
)


def _user_row(u: dict[str, Any]) -> dict[str, Any]:
    return {**u, "roles": ",".join(u.get("roles") or [])}


@user_app.command("create")
def create_user(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The user's name.")],
    role: Roles = None,
    team: Annotated[str | None, typer.Option("--team", help="Their team (for the 'team' scope).")] = None,
    password: Annotated[bool, typer.Option("--password", help="Ask for a password (for /auth/login).")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Create a user (role developer unless --role is given)."""
    secret = getpass.getpass("password (12 characters or more): ") if password else None
    made = client(ctx).create_user(name, roles=role or None, team=team, password=secret)
    print_json(made) if wants_json(ctx, json_out) else print_line(f"user {made['name']} created")


@user_app.command("list")
def list_users(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Every user."""
    items = client(ctx).list_users()["items"]
    print_json(items) if wants_json(ctx, json_out) else print_table(USER_COLUMNS, [_user_row(u) for u in items])


@user_app.command("set")
def set_user(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The user's name.")],
    role: Roles = None,
    team: Annotated[str | None, typer.Option("--team", help="Their team.")] = None,
    disable: Annotated[bool | None, typer.Option("--disable/--enable", help="Refuse (or allow) their logins.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Change a user's roles (replacing them), team, or whether they may log in."""
    changes = {k: v for k, v in {"roles": role, "team": team, "disabled": disable}.items() if v is not None}
    changed = client(ctx).update_user(name, **changes)
    print_json(changed) if wants_json(ctx, json_out) else print_table(USER_COLUMNS, [_user_row(changed)])


@user_app.command("rm")
def remove_user(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The user's name.")]) -> None:
    """Remove a user; their API keys and sessions stop working at once."""
    client(ctx).delete_user(name)
    print_line(f"user {name} removed")


KEY_COLUMNS = (
    Column("id", "id"),
    Column("prefix", "prefix"),
    Column("name", "name"),
    Column("created", "createdAt", "time"),
    Column("expires", "expiresAt", "time"),
    Column("last used", "lastUsedAt", "time"),
)


@user_key_app.command("create")
def create_user_key(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="Whose key (yours, unless you may manage others').")],
    name: Annotated[str | None, typer.Option("--name", help="What the key is for.")] = None,
    expires: Annotated[float | None, typer.Option("--expires-in", help="Seconds until it expires.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Create an API key; its text is shown this once (piped: the text alone)."""
    made = client(ctx).create_api_key(user, name=name, expires_in=expires)
    if wants_json(ctx, json_out):
        print_json(made)
    elif not output.is_tty():
        print_line(str(made["key"]))
    else:
        print_line(str(made["key"]), style="bold green")
        print_line("This is the only time this key is shown: store it now.", style="yellow")


@user_key_app.command("list")
def list_user_keys(
    ctx: typer.Context, user: Annotated[str, typer.Argument(help="Whose keys.")], json_out: JsonFlag = False
) -> None:
    """A user's live API keys (never their text)."""
    items = client(ctx).list_api_keys(user)["items"]
    print_json(items) if wants_json(ctx, json_out) else print_table(KEY_COLUMNS, items)


@user_key_app.command("revoke")
def revoke_user_key(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="Whose key.")],
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID", help="The key's id (or a unique prefix of one).")],
) -> None:
    """Revoke an API key: it stops working at once."""
    full = resolve(ctx, "user key", key_id, owner=user)
    client(ctx).revoke_api_key(user, full)
    print_line(f"key {full} revoked")


@role_app.command("list")
def list_roles(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """The roles and their permissions."""
    items = client(ctx).list_roles()["items"]
    if wants_json(ctx, json_out):
        print_json(items)
        return
    rows = [{**r, "permissions": " ".join(r["permissions"]), "kind": "built-in" if r["builtin"] else "custom"}
            for r in items]  # fmt: skip
    print_table((Column("role", "name"), Column("kind", "kind"), Column("permissions", "permissions")), rows)


@role_app.command("set")
def set_role(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The role's name.")],
    permissions: Annotated[list[str], typer.Argument(help="resource:action:scope, e.g. agent:read:team")],
    description: Annotated[str | None, typer.Option("--description")] = None,
) -> None:
    """Create or replace a custom role."""
    client(ctx).set_role(name, permissions, description)
    print_line(f"role {name}: {' '.join(permissions)}")


@role_app.command("rm")
def remove_role(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The role's name.")]) -> None:
    """Remove a custom role no user holds."""
    client(ctx).delete_role(name)
    print_line(f"role {name} removed")


AUDIT_COLUMNS = (
    Column("seq", "seq"),
    Column("at", "at", "time"),
    Column("actor", "actor"),
    Column("action", "action"),
    Column("resource", "resource"),
    Column("outcome", "outcome"),
    Column("status", "statusCode"),
)


@audit_app.command("list")
def list_audit(
    ctx: typer.Context,
    actor: Annotated[str | None, typer.Option("--actor", help="Only this actor (user:NAME, agent:ID).")] = None,
    action: Annotated[str | None, typer.Option("--action", help="Only actions like this (* wildcards).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 50,
    json_out: JsonFlag = False,
) -> None:
    """The newest entries of the audit log."""
    items = client(ctx).audit(actor=actor, action=action, limit=limit)["items"]
    print_json(items) if wants_json(ctx, json_out) else print_table(AUDIT_COLUMNS, items)


@audit_app.command("verify")
def verify_audit(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Walk the hash chain; exit 1 and name the first altered row when it does not hold."""
    verdict = client(ctx).verify_audit()
    if wants_json(ctx, json_out):
        print_json(verdict)
    elif verdict["ok"]:
        print_line(f"audit log intact: {verdict['rows']} rows, every hash holds")
    else:
        print_line(f"audit log ALTERED at row {verdict['firstBadSeq']}: {verdict['reason']}", style="bold red")
    if not verdict["ok"]:
        raise typer.Exit(1)
