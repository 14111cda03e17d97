"""``celery-stack``: submit audio, follow batches, show results, manage the DLQ, health.

Exit codes: 0 success, 1 the operation failed (e.g. no worker answered the
health task), 2 usage or configuration error.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
import uuid
from typing import Any

import click

from .settings import SettingsError


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return str(value)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=_json_default))


class ConfigError(click.ClickException):
    exit_code = 2


def _load():
    """Import the app (reads and validates the settings)."""
    try:
        from . import celery_app
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    return celery_app


def _storage(ca):
    from . import storage

    try:
        return storage.get_storage(ca.settings)
    except storage.StorageNotConfigured as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Operate the celery-stack sample ETL application.

    Configuration comes from CELERY_STACK_* environment variables (see
    `celery-stack settings`).
    """


@main.command()
@click.option("--timeout", default=15.0, show_default=True, help="Seconds to wait for a worker's answer.")
def health(timeout: float) -> None:
    """Send the health task through the broker and wait for a worker (exit 0 ok, 1 not)."""
    ca = _load()
    from .probe import health_roundtrip

    try:
        answer = health_roundtrip(ca.app, ca.settings, timeout=timeout)
    except Exception as exc:  # timeout, refused connection, access refused...
        click.echo(json.dumps({"status": "failed", "error": f"{type(exc).__name__}: {exc}"}))
        sys.exit(1)
    click.echo(json.dumps(answer, default=_json_default))


@main.command()
def settings() -> None:
    """Validate and print the effective settings (passwords hidden)."""
    ca = _load()
    from . import settings as s_mod

    for f in s_mod.fields():
        value = getattr(ca.settings, f.name)
        if f.name == "broker_urls":
            value = ";".join(s_mod.redact(u) for u in value)
        elif f.name == "mongodb_uri":
            value = s_mod.redact(value)
        click.echo(f"{s_mod.env_name(f.name)}={value}")
    for name in s_mod.unknown_variables():
        click.echo(f"warning: {name} names no setting", err=True)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, allow_dash=True))
@click.option("--batch-id", help="Batch id (default: random). Re-submitting with the same id is idempotent.")
@click.option("--force", is_flag=True, help="Analyse again even if a result of this analysis version exists.")
@click.option("--all-files", is_flag=True, help="In directories, take every file, not only audio suffixes.")
@click.option("--follow/--no-follow", default=False, help="Wait for the batch to finish, with a progress bar.")
def submit(paths: tuple[str, ...], batch_id: str | None, force: bool, all_files: bool, follow: bool) -> None:
    """Ingest files, directories or - (standard input) into GridFS and queue their analysis as one batch."""
    ca = _load()
    from . import submit as sub_mod

    from . import bulk

    store = _storage(ca)
    files = list(sub_mod.iter_files(paths, all_files=all_files))
    if not files:
        raise click.ClickException("no files to submit")
    batch_id = batch_id or uuid.uuid4().hex
    with click.progressbar(length=len(files), label="ingesting", file=sys.stderr) as bar:
        def progress(path, ingest, error):
            bar.update(1)
            if error is not None:
                click.echo(f"\n{path}: {error}", err=True)

        # pipelined publisher confirms: every chunk task confirmed by the broker, without a
        # round trip per task; what the broker did not accept is reported, not lost
        try:
            with bulk.from_settings(ca.app, ca.settings) as publisher:
                result = sub_mod.submit_batch(store, publisher, ca.settings, files,
                                              batch_id=batch_id, force=force, progress=progress)
        except bulk.BulkPublishError as exc:
            _not_accepted(batch_id, exc)
    click.echo(json.dumps({"batch_id": result.batch_id, "files": result.files, "unique": result.unique,
                           "new_blobs": result.new_blobs, "chunks": len(result.tasks),
                           "refused": result.refused}))
    if follow:
        _follow(store, result.batch_id, interval=1.0, timeout=None)


def _not_accepted(batch_id: str, exc) -> None:
    """Some chunk tasks were not confirmed by the broker: say which, and how to send them again; exit 1."""
    _echo_json({"batch_id": batch_id, "status": "incomplete", "confirmed_tasks": len(exc.result.confirmed),
                "not_accepted": exc.failed})
    click.echo(f"{exc}\nThe batch is recorded; publish its pending files again with: "
               f"celery-stack batch {batch_id} --resubmit", err=True)
    sys.exit(1)


def _follow(store, batch_id: str, interval: float, timeout: float | None) -> dict:
    status = store.batch_status(batch_id)
    if status is None:
        raise click.ClickException(f"no batch {batch_id}")
    started = time.monotonic()
    with click.progressbar(length=status["total"], label=f"batch {batch_id[:12]}", file=sys.stderr) as bar:
        done = 0
        while True:
            status = store.batch_status(batch_id)
            now_done = status["counts"]["ok"] + status["counts"]["failed"]
            bar.update(now_done - done)
            done = now_done
            if status.get("finished_at"):
                break
            if timeout is not None and time.monotonic() - started > timeout:
                break
            time.sleep(interval)
    return status


@main.command()
@click.argument("batch_id")
@click.option("--follow", is_flag=True, help="Wait until the batch has finished.")
@click.option("--timeout", type=float, default=None, help="Stop following after this many seconds.")
@click.option("--resubmit", is_flag=True, help="Publish the batch's pending files again (after lost messages).")
def batch(batch_id: str, follow: bool, timeout: float | None, resubmit: bool) -> None:
    """Show a batch's progress and summary."""
    ca = _load()
    store = _storage(ca)
    if resubmit:
        from . import submit as sub_mod

        from . import bulk

        try:
            with bulk.from_settings(ca.app, ca.settings) as publisher:
                n = sub_mod.resubmit_pending(store, publisher, ca.settings, batch_id)
        except bulk.BulkPublishError as exc:
            _not_accepted(batch_id, exc)
        click.echo(f"resubmitted {n} pending file(s)", err=True)
    status = _follow(store, batch_id, 1.0, timeout) if follow else store.batch_status(batch_id)
    if status is None:
        raise click.ClickException(f"no batch {batch_id}")
    _echo_json(status)
    if follow and not status.get("finished_at"):
        sys.exit(1)


@main.command()
@click.argument("sha256", required=False)
@click.option("--failed", is_flag=True, help="List failed analyses with their reasons.")
@click.option("--batch", "batch_id", help="Results of the files of a batch.")
@click.option("--limit", default=20, show_default=True)
def results(sha256: str | None, failed: bool, batch_id: str | None, limit: int) -> None:
    """Show analysis results (one file by sha256, a batch's, or the latest failures)."""
    ca = _load()
    store = _storage(ca)
    if sha256:
        from .audio import ANALYSIS_VERSION

        doc = store.get_analysis(sha256, ANALYSIS_VERSION)
        if doc is None:
            raise click.ClickException(f"no result for {sha256} (analysis v{ANALYSIS_VERSION})")
        _echo_json(doc)
        return
    query: dict[str, Any] = {}
    if failed:
        query["status"] = "failed"
    if batch_id:
        shas = [d["sha256"] for d in store.batch_items.find({"batch_id": batch_id}, {"sha256": 1})]
        query["sha256"] = {"$in": shas}
    docs = store.analyses.find(query, {"features.loudness_profile_dbfs": 0}).sort("analysed_at", -1).limit(limit)
    for doc in docs:
        line = {"sha256": doc["sha256"], "name": doc.get("name"), "status": doc["status"]}
        if doc["status"] == "failed":
            line["reason"] = doc.get("reason")
        else:
            line["duration_seconds"] = (doc.get("metadata") or {}).get("duration_seconds")
            line["rms_dbfs"] = (doc.get("features") or {}).get("rms_dbfs")
        click.echo(json.dumps(line, default=_json_default))


@main.group()
def dlq() -> None:
    """Inspect and requeue the dead-letter queue."""


@dlq.command("list")
@click.option("--limit", default=20, show_default=True)
def dlq_list(limit: int) -> None:
    """Show dead-lettered messages (nothing is consumed)."""
    ca = _load()
    from . import dlq as dlq_mod

    count, items = dlq_mod.inspect(ca.settings, limit=limit)
    _echo_json({"queue": ca.settings.dead_letter_queue, "messages": count, "shown": items})


@dlq.command("requeue")
@click.option("--id", "task_id", help="Only the message of this task id.")
@click.option("--limit", type=int, default=None, help="At most this many messages.")
@click.option("--all", "all_", is_flag=True, help="Every message (required without --id or --limit).")
def dlq_requeue(task_id: str | None, limit: int | None, all_: bool) -> None:
    """Publish dead-lettered messages back to their original queue."""
    if not (task_id or limit or all_):
        raise click.UsageError("say which messages: --id ID, --limit N or --all")
    ca = _load()
    from . import dlq as dlq_mod

    moved = dlq_mod.requeue(ca.settings, limit=limit, task_id=task_id)
    _echo_json({"requeued": len(moved), "messages": moved})
    if task_id and not moved:
        sys.exit(1)


@main.command("check-config")
def check_config() -> None:
    """Validate the website check list (CELERY_STACK_WEBCHECK_CONFIG) and print the schedule."""
    ca = _load()
    sched = ca.app.conf.beat_schedule or {}
    _echo_json({name: {"url": e["kwargs"]["check"]["url"], "every_seconds": e["schedule"]}
                for name, e in sched.items()})


if __name__ == "__main__":  # pragma: no cover
    main()
