"""The `signalscore` command: serve, migrate, and organisation / API key management."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

import click
import sqlalchemy as sa

from signalscore.auth import service as auth_service
from signalscore.config import Settings
from signalscore.db.dialect import concurrent_writers
from signalscore.db.engine import Database, create_db_engine
from signalscore.db.migrate import upgrade_to_head
from signalscore.observability import configure_logging

DEFAULT_ORG_NAME = "Default organization"

database_url_option = click.option(
    "--database-url",
    envvar="SIGNALSCORE_DATABASE_URL",
    default=None,
    help="sqlite:///path.db or postgresql://user@host/db [env SIGNALSCORE_DATABASE_URL; "
    "default sqlite:///./signalscore.db]",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
log_level_option = click.option(
    "--log-level",
    envvar="SIGNALSCORE_LOG_LEVEL",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
)


def _settings(**overrides: Any) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _open_database(settings: Settings) -> Database:
    """Open the database and bring its schema to the latest migration."""
    engine = create_db_engine(settings.database_url, connect_timeout=settings.db_connect_timeout)
    upgrade_to_head(engine)
    return Database(engine)


def _configure_logging(level: str) -> None:
    configure_logging(level)


def _echo_json(payload: Any) -> None:
    click.echo(json.dumps(payload))


@click.group()
@click.version_option(package_name="signalscore")
def main() -> None:
    """signalscore: explainable fit and urgency scores for B2B go-to-market teams."""


@main.command()
@database_url_option
def migrate(database_url: str | None) -> None:
    """Apply every pending database migration."""
    db = _open_database(_settings(database_url=database_url))
    db.dispose()
    click.echo("database is at the latest migration")


@main.command()
@click.option("--host", envvar="SIGNALSCORE_HOST", default=None, help="[default 127.0.0.1]")
@click.option("--port", envvar="SIGNALSCORE_PORT", type=int, default=None, help="[default 8000]")
@database_url_option
@click.option("--debug/--no-debug", envvar="SIGNALSCORE_DEBUG", default=None)
@log_level_option
@click.option(
    "--embedded-worker/--no-embedded-worker",
    envvar="SIGNALSCORE_EMBEDDED_WORKER",
    default=None,
    help="Run a recompute worker inside the server [default: on].",
)
@click.option(
    "--workers",
    "processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Server processes (PostgreSQL; each with its embedded worker unless disabled).",
)
def serve(
    host: str | None,
    port: int | None,
    database_url: str | None,
    debug: bool | None,
    log_level: str | None,
    embedded_worker: bool | None,
    processes: int,
) -> None:
    """Run the HTTP API (migrates the database first)."""
    import uvicorn

    from signalscore.app import create_served_app

    settings = _settings(
        host=host,
        port=port,
        database_url=database_url,
        debug=debug,
        log_level=log_level,
        embedded_worker=embedded_worker,
    )
    _configure_logging(settings.log_level)
    db = _open_database(settings)
    _bootstrap_default_organization(db, settings)
    if processes > 1:
        if not concurrent_writers(db.dialect):
            raise click.UsageError("--workers > 1 needs PostgreSQL (SQLite has one writer)")
        db.dispose()
        # Each process builds its own app from the same settings, passed down in the
        # environment (uvicorn's workers import the factory by name).
        for name, value in settings.model_dump(exclude_none=True).items():
            os.environ[f"SIGNALSCORE_{name.upper()}"] = str(value)
        uvicorn.run(
            "signalscore.app:create_served_app",
            factory=True,
            workers=processes,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            log_level=settings.log_level,
        )
        return
    app = create_served_app(settings, db)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,  # our middleware writes one JSON line per request instead
        log_level=settings.log_level,
    )


def _bootstrap_default_organization(db: Database, settings: Settings) -> None:
    """On an empty database, create an organisation and print its key, once."""
    with db.write() as conn:
        if auth_service.count_organizations(conn) > 0:
            return
        org, issued = auth_service.create_organization(conn, DEFAULT_ORG_NAME)
    base = f"http://{settings.host}:{settings.port}"
    rule = "=" * 72
    click.echo(
        f"\n{rule}\n"
        f"  Created organisation {org.name!r} ({org.id}) in an empty database.\n"
        f"  Its API key is shown only this once; store it now:\n\n"
        f"      {issued.key}\n\n"
        f"  Try:  curl -H 'Authorization: Bearer {issued.key}' {base}/v1/organization\n"
        f"  Or open the console, {base}/console, and sign in with the key.\n"
        f"{rule}\n"
    )
    sys.stdout.flush()


@main.command()
@database_url_option
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker processes to run.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000),
    default=None,
    help="Queue entries claimed at once [default 500].",
)
@click.option(
    "--lease-seconds",
    type=float,
    default=None,
    help="How long a claim lasts before another worker may take it [default 60].",
)
@log_level_option
def worker(
    database_url: str | None,
    concurrency: int,
    batch_size: int | None,
    lease_seconds: float | None,
    log_level: str | None,
) -> None:
    """Run standalone recompute workers until SIGTERM (each finishes or releases its batch)."""
    from signalscore.recompute.runner import run_workers

    settings = _settings(
        database_url=database_url,
        worker_batch_size=batch_size,
        worker_lease_seconds=lease_seconds,
        log_level=log_level,
    )
    _configure_logging(settings.log_level)
    _wait_for_database(settings).dispose()
    run_workers(settings, concurrency)


def _wait_for_database(settings: Settings) -> Database:
    """Workers are started by supervisors that do not wait for the database: retry (with
    backoff, logged) until it answers, instead of exiting."""
    delay = 0.5
    while True:
        try:
            return _open_database(settings)
        except sa.exc.OperationalError as exc:
            logging.getLogger("signalscore.worker").warning(
                "database unavailable at start (%s); retrying in %.1f s",
                type(exc).__name__,
                delay,
            )
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


@main.command()
@database_url_option
@click.option("--companies", type=click.IntRange(1, 1_000_000), default=1000, show_default=True)
@click.option(
    "--org",
    "org_id",
    default=None,
    help="Organisation to load into [default: the only/first one; created if none].",
)
def demo(database_url: str | None, companies: int, org_id: str | None) -> None:
    """Load a realistic sample: templates, a company profile with fit and urgency rules, and
    COMPANIES companies with values, assigned and queued for scoring."""
    from signalscore.demo import load_demo

    db = _open_database(_settings(database_url=database_url))
    with db.write() as conn:
        result = load_demo(conn, org_id=org_id, companies=companies)
    db.dispose()
    click.echo(result.summary())


@main.group()
def org() -> None:
    """Manage organisations."""


@org.command("create")
@click.argument("name")
@database_url_option
@json_option
def org_create(name: str, database_url: str | None, as_json: bool) -> None:
    """Create organisation NAME and its first API key."""
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise click.BadParameter("must be 1-200 characters", param_hint="NAME")
    db = _open_database(_settings(database_url=database_url))
    with db.write() as conn:
        organization, issued = auth_service.create_organization(conn, name)
    db.dispose()
    if as_json:
        _echo_json({"organizationId": organization.id, "apiKey": issued.key})
    else:
        click.echo(f"organization {organization.id} ({organization.name})")
        click.echo(f"api key (shown once): {issued.key}")


@main.group()
def key() -> None:
    """Manage API keys."""


@key.command("create")
@click.option("--org", "org_id", required=True, help="Organisation id.")
@click.option("--name", default=None, help="A label for the key.")
@database_url_option
@json_option
def key_create(org_id: str, name: str | None, database_url: str | None, as_json: bool) -> None:
    """Create another API key for an organisation."""
    db = _open_database(_settings(database_url=database_url))
    with db.write() as conn:
        if auth_service.get_organization(conn, org_id) is None:
            raise click.ClickException(f"no organisation with id {org_id!r}")
        issued = auth_service.create_api_key(conn, org_id, name)
    db.dispose()
    if as_json:
        _echo_json({"organizationId": org_id, "keyId": str(issued.info.id), "apiKey": issued.key})
    else:
        click.echo(f"key {issued.info.id} (shown once): {issued.key}")


@key.command("list")
@click.option("--org", "org_id", required=True, help="Organisation id.")
@database_url_option
@json_option
def key_list(org_id: str, database_url: str | None, as_json: bool) -> None:
    """List an organisation's keys (prefixes only; secrets are never stored)."""
    db = _open_database(_settings(database_url=database_url))
    with db.read() as conn:
        if auth_service.get_organization(conn, org_id) is None:
            raise click.ClickException(f"no organisation with id {org_id!r}")
        keys = auth_service.list_api_keys(conn, org_id)
    db.dispose()
    rows = [
        {
            "id": str(k.id),
            "prefix": k.prefix,
            "name": k.name,
            "createdAt": k.created_at.isoformat().replace("+00:00", "Z"),
            "revokedAt": k.revoked_at.isoformat().replace("+00:00", "Z") if k.revoked_at else None,
        }
        for k in keys
    ]
    if as_json:
        _echo_json(rows)
        return
    for r in rows:
        state = f"revoked {r['revokedAt']}" if r["revokedAt"] else "active"
        click.echo(f"{r['id']}  {r['prefix']}...  {state}  {r['name'] or ''}".rstrip())


@key.command("revoke")
@click.argument("key_id_or_prefix")
@database_url_option
def key_revoke(key_id_or_prefix: str, database_url: str | None) -> None:
    """Revoke a key by its id or its listed prefix (e.g. sk_live_Ab3dEf9h)."""
    db = _open_database(_settings(database_url=database_url))
    try:
        with db.write() as conn:
            revoked = auth_service.revoke_api_key(conn, key_id_or_prefix.removesuffix("..."))
    except (LookupError, ValueError) as exc:
        raise click.ClickException(str(exc.args[0])) from exc
    finally:
        db.dispose()
    if revoked:
        click.echo(f"revoked key {revoked[0].id} ({revoked[0].prefix}...)")
    else:
        click.echo("key was already revoked")


if __name__ == "__main__":  # pragma: no cover
    main()
