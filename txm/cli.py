"""The ``txm`` command: a thin skin over the library.

Options are parsed here and library functions called; the library's :class:`TxmError`
becomes a one-line message and an exit code in :class:`TxmGroup`, the one place that
does so. Exit codes: 0 success, 1 failure, 2 usage or configuration error.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
import peewee as pw
from rich.console import Console
from rich.table import Table

from txm import __version__, config, manage
from txm.db import schema
from txm.db.database import open_database
from txm.db.samples import newest_sample
from txm.errors import TxmError
from txm.passwords import weakness

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class TxmGroup(click.Group):
    """A click group that reports the library's errors as plain messages."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TxmError as exc:
            error = click.ClickException(str(exc))
            error.exit_code = exc.exit_code
            raise error from None
        except ModuleNotFoundError as exc:
            if not exc.name or exc.name.split(".")[0] == "txm":
                raise
            # An installation without one of txm's dependencies: say which, before any harm.
            raise click.ClickException(f"txm cannot run: the module {exc.name!r} it needs is not installed; "
                                       f"install txm again with its dependencies (pip install txm)") from None


class Context:
    """What every command shares: the configuration, loaded on first use."""

    def __init__(self, config_path: str | None):
        self.config_path = config_path
        self._settings: config.Settings | None = None
        self.out = Console(highlight=False, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    @property
    def settings(self) -> config.Settings:
        if self._settings is None:
            self._settings = config.load_settings(self.config_path)
        return self._settings

    def open_db(self):
        return open_database(self.settings)

    def warn(self, text: str) -> None:
        self.err.print(f"[yellow]Warning:[/yellow] {text}")


pass_context = click.make_pass_decorator(Context)


@click.group(cls=TxmGroup, context_settings=CONTEXT)
@click.option("--config", "config_path", metavar="FILE", type=click.Path(dir_okay=False),
              help="Configuration file (txm.toml or txm.conf). Default: $TXM_CONFIG, then ./, ~/, /etc/.")
@click.version_option(__version__, "-V", "--version", prog_name="txm")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """txm: a server for Tiger meters (TTP), with a web interface, alarms and LoggerNet export.

    \b
    Start here:
      txm serve            start the servers (creates the database on first run)
      txm unit add M1 --key s3cret --fields 4
      txm send-ttp up M1 s3cret --value 1 --value 2 --value 3 --value 4
    """
    ctx.obj = Context(config_path)


# --- configuration ---------------------------------------------------------------------------


@cli.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print the values as JSON for scripts.")
@pass_context
def config_command(ctx: Context, as_json: bool) -> None:
    """Show which configuration file is used and every effective setting with its source.

    \b
    Example:
      txm --config /etc/txm.toml config
    """
    settings = ctx.settings
    rows = config.describe(settings)
    if as_json:
        click.echo(json.dumps({"file": str(settings.path) if settings.path else None,
                               "settings": [{"section": s, "key": k, "value": v, "source": src}
                                            for s, k, v, src in rows]}, indent=2))
        return
    if settings.path:
        ctx.out.print(f"Configuration file: [bold]{settings.path}[/bold]")
    else:
        searched = ", ".join(str(p) for p in config.search_paths())
        ctx.out.print(f"No configuration file found (searched {searched}); using defaults.")
    table = Table("section", "setting", "value", "source", box=None, pad_edge=False)
    for row in rows:
        table.add_row(*row)
    ctx.out.print(table)


# --- database ----------------------------------------------------------------------------------


@cli.command()
@pass_context
def syncdb(ctx: Context) -> None:
    """Create the database and its missing tables, and the first administrator.

    Safe to run again: existing tables and data are left alone. When there is no user yet it
    creates the superuser 'Administrator' with password 'admin' (id 1): change it at once.

    \b
    Example:
      txm syncdb
    """
    result = manage.syncdb(ctx.settings)
    where = ctx.settings.database_label()
    if result.created_tables:
        ctx.out.print(f"Created {len(result.created_tables)} table(s) in {where}.")
    else:
        ctx.out.print(f"All tables already exist in {where}.")
    if result.created_admin:
        ctx.warn("created the superuser 'Administrator' with password 'admin'; "
                 "change it now with: txm user passwd Administrator")


@cli.command("reset-admin")
@pass_context
def reset_admin(ctx: Context) -> None:
    """Set the password of the first administrator (user id 1) back to 'admin'.

    Works whatever that user is called now. Log in and change the password afterwards.

    \b
    Example:
      txm reset-admin
    """
    ctx.open_db()
    user = manage.reset_admin()
    ctx.out.print(f"The password of {user.username!r} (id 1) is now 'admin'.")
    ctx.warn(f"log in and change it at once: txm user passwd {user.username}")


# --- users -------------------------------------------------------------------------------------


def _read_password(given: str | None) -> str:
    """The password from the option, a hidden prompt at a terminal, or a line of stdin."""
    if given is not None:
        return given
    if sys.stdin.isatty():
        return click.prompt("Password", hide_input=True, confirmation_prompt=True)
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise click.UsageError("give --password, or type it at a terminal, or send it on standard input")
    return line


@cli.group(cls=TxmGroup, context_settings=CONTEXT)
def user() -> None:
    """Manage the users who log in to the web interface and the admin panel.

    \b
    Example:
      txm user add alice --email alice@example.com --staff
    """


@user.command("add")
@click.argument("name")
@click.option("--email", default="", help="Email address (needed for alarm emails).")
@click.option("--staff", is_flag=True, help="May enter the admin panel.")
@click.option("--superuser", is_flag=True, help="May do everything (implies --staff).")
@click.option("--password", help="The password; prompted for (hidden) at a terminal when left out.")
@pass_context
def user_add(ctx: Context, name: str, email: str, staff: bool, superuser: bool, password: str | None) -> None:
    """Create a user.

    \b
    Example:
      txm user add alice --email alice@example.com --staff
    """
    ctx.open_db()
    password = _read_password(password)
    created = manage.add_user(name, password, email=email, staff=staff, superuser=superuser)
    ctx.out.print(f"Created user {created.username!r} (id {created.id}).")
    if (problem := weakness(password)) is not None:
        ctx.warn(f"weak password: {problem}")


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@pass_context
def user_list(ctx: Context, as_json: bool) -> None:
    """List the users.

    \b
    Example:
      txm user list
    """
    ctx.open_db()
    users = list(schema.User.select().order_by(schema.User.id))
    if as_json:
        click.echo(json.dumps([{"id": u.id, "username": u.username, "email": u.email, "staff": u.is_staff,
                                "superuser": u.is_superuser, "active": u.is_active} for u in users], indent=2))
        return
    table = Table("id", "user", "email", "staff", "superuser", "active", box=None, pad_edge=False)
    for u in users:
        table.add_row(str(u.id), u.username, u.email, _yes(u.is_staff), _yes(u.is_superuser), _yes(u.is_active))
    ctx.out.print(table)


@user.command("passwd")
@click.argument("name")
@click.option("--password", help="The new password; prompted for (hidden) at a terminal when left out.")
@pass_context
def user_passwd(ctx: Context, name: str, password: str | None) -> None:
    """Set a user's password.

    \b
    Example:
      txm user passwd Administrator
    """
    ctx.open_db()
    manage.get_user(name)
    password = _read_password(password)
    manage.set_password(name, password)
    ctx.out.print(f"Password of {name!r} changed.")
    if (problem := weakness(password)) is not None:
        ctx.warn(f"weak password: {problem}")


@user.command("remove")
@click.argument("name")
@pass_context
def user_remove(ctx: Context, name: str) -> None:
    """Delete a user. The last active superuser cannot be removed.

    \b
    Example:
      txm user remove alice
    """
    ctx.open_db()
    manage.remove_user(name)
    ctx.out.print(f"Removed user {name!r}.")


@user.command("unlock")
@click.argument("name")
@pass_context
def user_unlock(ctx: Context, name: str) -> None:
    """Let a user locked out by failed logins log in again at once.

    Forgets the user name's failed logins from every address. Until then, logins of a name that
    failed too often from one address are refused from that address for a while; other
    addresses are not affected (docs/web.md, "Rate limits"). An address refused for its
    failures at many names stays refused until they age out.

    \b
    Example:
      txm user unlock alice
    """
    from txm.webcore import clear_login_failures

    ctx.open_db()
    user = manage.get_user(name)
    count = clear_login_failures(user.username)
    ctx.out.print(f"Cleared {count} failed login(s) of {user.username!r}; they may log in again at once.")


# --- units -------------------------------------------------------------------------------------


@cli.group(cls=TxmGroup, context_settings=CONTEXT)
def unit() -> None:
    """Manage units: the Tiger meters that talk to txm over TTP.

    \b
    Example:
      txm unit add M1 --key s3cret --fields 4 --labels Flow,Level,Temp,Pressure
    """


@unit.command("add")
@click.argument("code")
@click.option("--key", required=True, help="The unit key the meter sends with every request.")
@click.option("--fields", "channels", required=True, type=int,
              help=f"Number of data fields (channels) in each sample, 1 to {schema.MAX_CHANNELS}.")
@click.option("--name", default="", help="A name for people.")
@click.option("--labels", default="", help="Channel labels, comma-separated: L1,L2,...")
@click.option("--show-labels", is_flag=True, help="TTP downloads answer with labels: L1=11 L2=22 ...")
@pass_context
def unit_add(ctx: Context, code: str, key: str, channels: int, name: str, labels: str, show_labels: bool) -> None:
    """Create a unit. The code is letters and digits only.

    \b
    Example:
      txm unit add M1 --key s3cret --fields 4 --name "North tank" --labels Flow,Level,Temp,Pressure
    """
    ctx.open_db()
    created = manage.add_unit(code, key, channels, name=name, labels=labels, show_labels=show_labels)
    ctx.out.print(f"Created unit {created.code!r} with {created.channels} data field(s).")


@unit.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@pass_context
def unit_list(ctx: Context, as_json: bool) -> None:
    """List the units with their sample counts.

    \b
    Example:
      txm unit list
    """
    ctx.open_db()
    units = list(schema.Unit.select().order_by(schema.Unit.code))
    counts = dict(schema.Sample.select(schema.Sample.unit, pw.fn.COUNT(schema.Sample.id))
                  .group_by(schema.Sample.unit).tuples())
    if as_json:
        click.echo(json.dumps([{"code": u.code, "name": u.name, "fields": u.channels,
                                "labels": u.channel_labels(), "samples": counts.get(u.id, 0)} for u in units],
                              indent=2))
        return
    table = Table("code", "name", "fields", "labels", "samples", box=None, pad_edge=False)
    for u in units:
        table.add_row(u.code, u.name, str(u.channels), ",".join(u.channel_labels()), str(counts.get(u.id, 0)))
    ctx.out.print(table)


@unit.command("show")
@click.argument("code")
@pass_context
def unit_show(ctx: Context, code: str) -> None:
    """Show one unit's settings and its newest sample. The key is not shown.

    \b
    Example:
      txm unit show M1
    """
    ctx.open_db()
    u = schema.Unit.by_code(code)
    newest = newest_sample(u)
    table = Table(box=None, show_header=False, pad_edge=False)
    for label, value in (("code", u.code), ("name", u.name), ("data fields", str(u.channels)),
                         ("labels", ", ".join(u.channel_labels())),
                         ("labelled TTP downloads", _yes(u.show_labels)),
                         ("samples", str(manage.sample_count(u))),
                         ("newest sample", f"{newest.timestamp} (id {newest.id})" if newest else "none")):
        table.add_row(f"[bold]{label}[/bold]", value)
    ctx.out.print(table)


@unit.command("remove")
@click.argument("code")
@click.option("--yes", is_flag=True, help="Do not ask, even when the unit has samples.")
@pass_context
def unit_remove(ctx: Context, code: str, yes: bool) -> None:
    """Delete a unit with all its samples and alarms. Asks first when it has samples.

    \b
    Example:
      txm unit remove M1 --yes
    """
    ctx.open_db()
    count = manage.sample_count(schema.Unit.by_code(code))
    if count and not yes:
        if not sys.stdin.isatty():
            raise TxmError(f"unit {code!r} has {count} sample(s); add --yes to delete it with them")
        click.confirm(f"Unit {code!r} has {count} sample(s). Delete it and all of them?", abort=True)
    removed = manage.remove_unit(code)
    ctx.out.print(f"Removed unit {code!r} and {removed} sample(s).")


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


@cli.command()
@click.option("-v", "--verbose", is_flag=True, help="Log every connection and request (never unit keys).")
@click.option("--port", "ds_port", type=int, default=None, help="TTP port instead of DS_PORT (0: any free port).")
@pass_context
def serve(ctx: Context, verbose: bool, ds_port: int | None) -> None:
    """Start txm: prepare the database (creating it on first run) and serve.

    The TTP server listens on DS_PORT for meters; the other services (web interface, email,
    LoggerNet export) start beside it as configured. Ctrl-C or SIGTERM stops it cleanly,
    committing pending uploads first.

    \b
    Example:
      txm --config /etc/txm.toml serve --verbose
    """
    import signal

    # A signal that comes while the server's modules load is kept for the server to honour.
    early: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: early.append(signum))
    try:
        _serve(ctx, verbose, ds_port, early)
    finally:
        # One that comes once the server has stopped (a second Ctrl-C, systemd's SIGTERM to the
        # whole group after the first) finds the process ending: it must not end it with a
        # killed-by-signal status. Ignored, not handled: Python gives handled signals back their
        # default action while it shuts down.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
    ctx.out.print("Stopped.")


def _serve(ctx: Context, verbose: bool, ds_port: int | None, early: list[int]) -> None:
    from txm.serve import Server

    _setup_logging(verbose)
    settings = ctx.settings
    if ds_port is not None:
        settings = settings.replace(DS_PORT=ds_port)
    server = Server(settings)
    if early:
        server.request_stop()
    server.start()
    if server.should_exit:  # a signal during start-up
        return
    ctx.out.print(f"Configuration: {settings.path or 'none found, using defaults'}")
    ctx.out.print(f"Database: {settings.database_label()}" + (" (created)" if server.database_created else ""))
    if server.admin_created:
        ctx.warn("created the superuser 'Administrator' with password 'admin'; "
                 "change it now with: txm user passwd Administrator")
    commit = ("every OK durable, commits grouped" if settings.COMMIT_INTERVAL <= 1
              else f"commit every {settings.COMMIT_INTERVAL} uploads or 1 s")
    ctx.out.print(f"TTP server listening on {server.ttp_address} ({commit})")
    if server.ttp_apps:
        ctx.out.print("TTP Apps: " + ", ".join(server.ttp_apps))
    for service in server.services:
        description = getattr(service, "description", "")
        if description:
            ctx.out.print(description)
    ctx.out.print("Press Ctrl-C to stop.")
    sys.stdout.flush()
    server.serve()


def _setup_logging(verbose: bool) -> None:
    import logging

    from txm.logs import log_to_stderr

    log_to_stderr(logging.DEBUG if verbose else logging.INFO)


@cli.command("send-ttp")
@click.argument("words", nargs=-1)
@click.option("--host", default="127.0.0.1", show_default=True, help="Server to send to.")
@click.option("--port", type=int, default=None, help="TTP port (default: DS_PORT from the configuration).")
@click.option("--value", "values", multiple=True, help="up: a channel value (repeat for each channel).")
@click.option("--time", "when", default=None, help="up: the sample's timestamp (default: now), e.g. '2026-1-16 15:30:45'.")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for each reply.")
@pass_context
def send_ttp(ctx: Context, words: tuple[str, ...], host: str, port: int | None, values: tuple[str, ...],
             when: str | None, timeout: float) -> None:
    """Send TTP requests to a server and print each reply, as a meter would.

    Raw request lines come as arguments or, with none, one per line on standard input; they
    all go over one connection. Two short forms help when testing a meter's setup:
    'up CODE KEY --value V ...' uploads one sample (timestamp now unless --time) and
    'last CODE KEY' downloads the unit's newest sample.

    Exit status: 0 when every reply was OK, 1 when any reply was an error code,
    2 when the server could not be reached.

    \b
    Example:
      txm send-ttp 'TTP /up/M1/<2026-1-16 15:30:45;11;22> s3cret'
      txm send-ttp up M1 s3cret --value 11 --value 22
      txm send-ttp last M1 s3cret
      printf 'TTP /dl/M1/last s3cret\\n' | txm send-ttp --port 9995
    """
    import datetime as dt

    from txm.client import TTPClient

    if port is None:
        port = ctx.settings.DS_PORT
    if words and words[0] in ("up", "last"):
        form = words[0]
        if len(words) != 3:
            raise click.UsageError(f"'{form}' takes CODE and KEY: txm send-ttp {form} CODE KEY")
        code, key = words[1], words[2]
        if form == "up":
            if not values:
                raise click.UsageError("'up' needs at least one --value")
            stamp = when or dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
            lines = [f"TTP /up/{code}/<{stamp};{';'.join(values)}> {key}"]
        else:
            lines = [f"TTP /dl/{code}/last {key}"]
    elif words:
        lines = list(words)
    else:
        lines = [line.rstrip("\r\n") for line in sys.stdin]
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise click.UsageError("no request given: pass request lines as arguments or on standard input")
    failed = 0
    with TTPClient(host, port, timeout=timeout) as client:
        for line in lines:
            reply = client.request(line)
            click.echo(reply)
            if not (reply == "OK" or reply.startswith("OK ")):
                failed += 1
    if failed:
        raise click.exceptions.Exit(1)


@cli.command("migrate-db")
@click.option("--from", "source", required=True, metavar="DB",
              help="Source: a configuration file, or a URL such as sqlite:///txm.db.")
@click.option("--to", "destination", required=True, metavar="DB",
              help="Destination (empty): a configuration file, or a URL such as postgresql://txm@db1/txm.")
@pass_context
def migrate_db(ctx: Context, source: str, destination: str) -> None:
    """Copy a whole installation to another database and verify the row counts.

    Every table is copied in batches, keeping ids, into a destination that holds no data yet
    (its tables are created as needed). Stop txm serve first so nothing arrives meanwhile.
    URLs: sqlite:///relative.db, sqlite:////absolute.db, postgresql://USER[:PW]@HOST[:PORT]/NAME,
    mysql://USER[:PW]@HOST[:PORT]/NAME.

    \b
    Example:
      txm migrate-db --from sqlite:////var/lib/txm/txm.db --to postgresql://txm@127.0.0.1/txm
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from txm.db.migrate import migrate, settings_for

    src, dst = settings_for(source), settings_for(destination)
    with Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                  console=ctx.err, disable=not ctx.err.is_terminal) as bar:
        tasks: dict[str, Any] = {}

        def progress(table: str, done: int, total: int) -> None:
            if table not in tasks:
                tasks[table] = bar.add_task(table, total=total)
            bar.update(tasks[table], completed=done)

        counts = migrate(src, dst, progress=progress)
    rows = sum(c.destination for c in counts)
    ctx.out.print(f"Copied {rows} row(s) in {len(counts)} table(s) from {src.database_label()} "
                  f"to {dst.database_label()}; row counts match.")


# --- exports -----------------------------------------------------------------------------------


@cli.command("export-csv")
@click.argument("code", required=False)
@click.option("--all", "all_units", is_flag=True, help="Every unit, one CODE.csv each into the folder -o DIR.")
@click.option("--from", "start", metavar="DATETIME",
              help="First sample time, inclusive: YYYY-MM-DD, 'YYYY-MM-DD HH:MM[:SS]', today, yesterday.")
@click.option("--to", "end", metavar="DATETIME",
              help="Last sample time, inclusive of the whole day/minute/second it names.")
@click.option("--fields", metavar="LIST",
              help="Channels: numbers, ranges or labels (1,3 / 2-4 / Flow,Temp) or 'all'. "
                   "Default: the unit's report fields.")
@click.option("-o", "--output", type=click.Path(), help="File to write (folder with --all); - or none: standard output.")
@click.option("--since-last", "since_last", metavar="NAME",
              help="Only samples stored since the last run under NAME (kept in the database), in storage order.")
@pass_context
def export_csv(ctx: Context, code: str | None, all_units: bool, start: str | None, end: str | None,
               fields: str | None, output: str | None, since_last: str | None) -> None:
    """Export a unit's samples as CSV, for spreadsheets and cron jobs.

    Columns: timestamp (the meter's time, YYYY-MM-DD HH:MM:SS[.ffffff]) and one per channel,
    named by its label; the same as the web interface's download. Rows come in timestamp
    order; with --since-last in the order they were stored, so a nightly job never misses or
    repeats a sample even when meters back-fill. A progress bar shows at a terminal only.

    \b
    Example:
      txm export-csv M1 --from 2026-01-01 --to 2026-01-31 > m1-january.csv
      txm export-csv M1 --fields Flow,Temp -o flow.csv
      txm export-csv --all --since-last nightly -o /srv/export/$(date +%F)
    """
    from pathlib import Path

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from txm.export import csv

    if all_units == (code is not None):
        raise click.UsageError("name one unit CODE, or give --all")
    if output == "-":
        output = None
    if all_units and not output:
        raise click.UsageError("--all writes one file per unit: name the folder with -o DIR")
    ctx.open_db()
    with Progress(TextColumn("exporting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=ctx.err, disable=not ctx.err.is_terminal) as bar:
        task = bar.add_task("samples", total=None)

        class BarProgress(csv.Progress):
            wants_total = ctx.err.is_terminal

            def total(self, samples: int) -> None:
                bar.update(task, total=samples)

            def advance(self, samples: int) -> None:
                bar.advance(task, samples)

        out = Path(output) if output else sys.stdout.buffer
        if not output:
            sys.stdout.flush()
        try:
            result = csv.export_csv(schema.database.obj, code, out, fields=fields, start=start, end=end,
                                    since_last=since_last, progress=BarProgress())
        except BrokenPipeError:
            _silence_stdout()
            raise TxmError("the output was closed before the export finished; nothing was marked as exported"
                           ) from None
    if ctx.err.is_terminal:
        where = ", ".join(str(f) for f in result.files[:3]) + (" ..." if len(result.files) > 3 else "")
        ctx.err.print(f"Exported {result.samples} sample(s)" + (f" to {where}" if where else "") + ".")


def _silence_stdout() -> None:
    """After the reader of standard output went away, let the exit not complain about it again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


@cli.command("loggernet-pull")
@click.option("--host", default=None, help="The Data Export server (LoggerNet or another txm). Default: LOGGERNET_HOST.")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Its port. Default: LOGGERNET_PORT (1200).")
@click.option("--format", "fmt", type=click.Choice(["standard", "rtms"]), default=None,
              help="The record format it sends. Default: LOGGERNET_FORMAT.")
@click.option("--watchdog", type=click.FloatRange(min=0.01), default=None, metavar="SECONDS",
              help="Reopen the connection when no record comes for this long. Default: LOGGERNET_WATCHDOG_SECONDS.")
@click.option("-v", "--verbose", is_flag=True, help="Log every record.")
@pass_context
def loggernet_pull(ctx: Context, host: str | None, port: int | None, fmt: str | None, watchdog: float | None,
                   verbose: bool) -> None:
    """Pull records from a LoggerNet Data Export server into units, until stopped.

    Each record is committed to the database and only then acknowledged; a record sent again
    after a lost acknowledgement is acknowledged without being stored twice. Each station and
    table is a unit (LOGGERNET_UNITS, or created when LOGGERNET_AUTO_CREATE is on). A failed
    connection is retried every 5 s. Ctrl-C or SIGTERM stops it cleanly. txm serve does the
    same when LOGGERNET_HOST is set.

    \b
    Example:
      txm loggernet-pull --host loggernet.example.com --port 1200 --format rtms
    """
    import signal
    import threading

    from txm.loggernet.client import PullClient

    settings = ctx.settings
    host = host or settings.LOGGERNET_HOST
    if not host:
        raise click.UsageError("name the Data Export server with --host (or set LOGGERNET_HOST)")
    _setup_logging(verbose)
    database = ctx.open_db()
    client = PullClient(settings, database, host=host, port=port, fmt=fmt, watchdog=watchdog)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    ctx.err.print(f"{client.description}; Ctrl-C stops.")
    try:
        client.run(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    ctx.err.print(f"Stopped after acknowledging {client.acknowledged} record(s).")
# --- mailing lists -----------------------------------------------------------------------------


@cli.group("mailing-list", cls=TxmGroup, context_settings=CONTEXT)
def mailing_list() -> None:
    """Manage each unit's mailing list: the users its alarm emails go to.

    \b
    Example:
      txm mailing-list add M1 alice bob
    """


@mailing_list.command("add")
@click.argument("code")
@click.argument("users", nargs=-1, required=True)
@pass_context
def mailing_list_add(ctx: Context, code: str, users: tuple[str, ...]) -> None:
    """Put users on a unit's mailing list (creating the list when the unit has none).

    Users need an email address to receive alarm emails (txm user add NAME --email ...).

    \b
    Example:
      txm mailing-list add M1 alice bob
    """
    from txm.alarms import mailing_lists

    ctx.open_db()
    change = mailing_lists.mailing_list_add(code, users)
    if change.changed:
        ctx.out.print(f"Added {', '.join(change.changed)} to the mailing list of unit {code!r}.")
    if change.unchanged:
        ctx.out.print(f"Already on it: {', '.join(change.unchanged)}.")
    _warn_no_email(ctx, code)


@mailing_list.command("remove")
@click.argument("code")
@click.argument("users", nargs=-1, required=True)
@pass_context
def mailing_list_remove(ctx: Context, code: str, users: tuple[str, ...]) -> None:
    """Take users off a unit's mailing list.

    \b
    Example:
      txm mailing-list remove M1 bob
    """
    from txm.alarms import mailing_lists

    ctx.open_db()
    change = mailing_lists.mailing_list_remove(code, users)
    if change.changed:
        ctx.out.print(f"Removed {', '.join(change.changed)} from the mailing list of unit {code!r}.")
    if change.unchanged:
        ctx.out.print(f"Not on it: {', '.join(change.unchanged)}.")


@mailing_list.command("show")
@click.argument("code")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@pass_context
def mailing_list_show(ctx: Context, code: str, as_json: bool) -> None:
    """Show who is on a unit's mailing list, and who will not get its emails.

    \b
    Example:
      txm mailing-list show M1
    """
    from txm.alarms import mailing_lists

    ctx.open_db()
    unit_, users = mailing_lists.mailing_list_members(code)
    if as_json:
        click.echo(json.dumps([{"username": u.username, "email": u.email, "active": u.is_active,
                                "receives": bool(u.is_active and u.email.strip())} for u in users], indent=2))
        return
    if not users:
        ctx.out.print(f"The mailing list of unit {code!r} is empty: its alarms send no email.")
        return
    table = Table("user", "email", "receives alarm emails", box=None, pad_edge=False)
    for u in users:
        receives = ("no: inactive" if not u.is_active else "yes" if u.email.strip() else "no: no email address")
        table.add_row(u.username, u.email, receives)
    ctx.out.print(table)


def _warn_no_email(ctx: Context, code: str) -> None:
    from txm.alarms import mailing_lists

    _, users = mailing_lists.mailing_list_members(code)
    for u in users:
        if not u.email.strip():
            ctx.warn(f"{u.username} has no email address and gets no alarm email")
