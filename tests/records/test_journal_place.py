"""Where usage records wait while the database is away: somewhere the gateway can write, even
when the config directory is a read-only mount (a Kubernetes ConfigMap, a `:ro` volume)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from concord.gateway.records_component import JOURNAL_ENV, journal_dir
from concord.records.db import create_database

POSTGRES = "postgresql://u:p@db.internal/concord"


def test_the_environment_chooses_first(tmp_path: Path) -> None:
    chosen = tmp_path / "spool"
    env = {JOURNAL_ENV: str(chosen)}
    assert journal_dir(POSTGRES, tmp_path, env) == chosen
    assert journal_dir(f"sqlite:///{tmp_path / 'u.db'}", tmp_path, env) == chosen


def test_a_sqlite_file_keeps_its_journal_beside_it(tmp_path: Path) -> None:
    place = journal_dir("sqlite:///data/usage.db", tmp_path, {})
    assert place == (tmp_path / "data" / "usage.db.usage-journal").resolve()


def test_postgresql_journals_beside_a_writable_config(tmp_path: Path) -> None:
    assert journal_dir(POSTGRES, tmp_path, {}) == tmp_path / ".concord-journal"


def test_a_config_directory_that_cannot_hold_it_sends_it_to_the_temporary_directory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / ".concord-journal").write_text("in the way")  # cannot become a directory
    place = journal_dir(POSTGRES, tmp_path, {})
    assert place.parent == Path(tempfile.gettempdir())
    assert place.name.startswith("concord-journal-")
    assert place == journal_dir(POSTGRES, tmp_path, {})  # the same place after a restart
    assert JOURNAL_ENV in caplog.text and "p@" not in caplog.text


def test_a_sqlite_file_in_a_directory_that_cannot_hold_it_journals_to_the_temporary_directory(
    tmp_path: Path,
) -> None:
    (tmp_path / "usage.db.usage-journal").write_text("in the way")
    place = journal_dir("sqlite:///usage.db", tmp_path, {})
    assert place.parent == Path(tempfile.gettempdir())
    assert place != journal_dir(POSTGRES, tmp_path, {})  # one journal per place it stood for


def test_a_database_directory_that_cannot_be_made_leaves_the_gateway_to_start(
    tmp_path: Path,
) -> None:
    """It is reported as a database down (readiness, journal), not a crash at start-up."""
    (tmp_path / "afile").write_text("in the way")
    database = create_database("sqlite:///afile/usage.db", tmp_path)  # must not raise
    assert database.url.endswith("afile/usage.db")
    assert journal_dir("sqlite:///afile/usage.db", tmp_path, {}).parent == Path(
        tempfile.gettempdir()
    )
