"""The commands run as modules find conf/ from the working directory or $UPBENCH_CONF."""

from __future__ import annotations

import pytest

from tests.helpers import CONF_DIR
from upbench.conf import CONF_ENV, conf_dir


def test_conf_dir_is_the_repository_conf_from_its_root(monkeypatch):
    monkeypatch.delenv(CONF_ENV, raising=False)
    monkeypatch.chdir(CONF_DIR.parent)
    assert conf_dir() == CONF_DIR


def test_conf_dir_follows_the_environment_and_says_what_to_do_when_absent(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(CONF_ENV, str(CONF_DIR))
    assert conf_dir() == CONF_DIR
    monkeypatch.delenv(CONF_ENV)
    with pytest.raises(FileNotFoundError, match="run the command from the repository root"):
        conf_dir()
