"""The official `kaggle` CLI (pinned in tests/kaggle-cli-requirements.txt, installed in a
venv of its own beside the cargo target dir) against the fake Kaggle server: list, files,
download, submit, submissions and leaderboard, for competitions and datasets. The fake and
our client were written together; where the official client also passes, the fake speaks
Kaggle's dialect.

The CLI talks to `https://api.kaggle.com` unless told otherwise, and its SDK offers no
endpoint setting beyond fixed localhost ports, so the runner below points the SDK's
production endpoint at the fake before the CLI starts; nothing else of the CLI is touched.
"""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import pinned_venv_python
from fake_kaggle import USERS, FakeKaggle

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "tests" / "kaggle-cli-requirements.txt"
RUNNER = """
import sys
from kagglesdk import kaggle_env
kaggle_env._env_to_endpoint[kaggle_env.KaggleEnv.PROD] = sys.argv[1]
sys.argv = ["kaggle"] + sys.argv[2:]
from kaggle.cli import main
main()
"""


@pytest.fixture(scope="module")
def official_python():
    """The official CLI's venv python (its own venv, beside the cargo target dir)."""
    return pinned_venv_python("kaggle-cli-venv", REQUIREMENTS)


@pytest.fixture(scope="module")
def server():
    fake = FakeKaggle().start()
    yield fake
    fake.stop()


@pytest.fixture
def kaggle(official_python, server, tmp_path):
    config = tmp_path / "config"
    config.mkdir()
    (config / "kaggle.json").write_text(json.dumps({"username": "alice", "key": USERS["alice"]}))
    (config / "kaggle.json").chmod(0o600)
    work = tmp_path / "work"
    work.mkdir()
    env = {name: value for name, value in os.environ.items() if not name.startswith("KAGGLE_")}
    env |= {"KAGGLE_CONFIG_DIR": str(config), "HOME": str(tmp_path)}

    def run(*args):
        done = subprocess.run([str(official_python), "-c", RUNNER, server.url, *args], env=env,
                              cwd=work, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"kaggle {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    run.work = work
    return run


def test_competitions_list_and_files(kaggle, server):
    listing = kaggle("competitions", "list", "-s", "titanic")
    assert "https://www.kaggle.com/competitions/titanic" in listing
    files = kaggle("competitions", "files", "-c", "titanic")
    for name, data in server.competitions["titanic"]["files"].items():
        assert name in files and str(len(data)) in files


def test_competition_download_whole_and_one_file(kaggle, server):
    expected = server.competitions["titanic"]["files"]
    kaggle("competitions", "download", "-c", "titanic", "-p", "all")
    with zipfile.ZipFile(kaggle.work / "all" / "titanic.zip") as archive:
        assert {name: archive.read(name) for name in archive.namelist()} == expected
    kaggle("competitions", "download", "-c", "titanic", "-f", "train.csv", "-p", "one")
    assert (kaggle.work / "one" / "train.csv").read_bytes() == expected["train.csv"]


def test_submit_then_submissions_and_leaderboard(kaggle, server):
    submission = b"PassengerId,Survived\n892,0\n"
    (kaggle.work / "official.csv").write_bytes(submission)
    said = kaggle("competitions", "submit", "-c", "titanic", "-f", "official.csv", "-m", "from the official CLI")
    assert "Successfully submitted" in said
    stored = server.submissions["titanic"][0]
    assert stored["data"] == submission and stored["description"] == "from the official CLI"
    assert str(stored["ref"]) in kaggle("competitions", "submissions", "-c", "titanic")
    assert "Iceberg Dodgers" in kaggle("competitions", "leaderboard", "-c", "titanic", "--show")


def test_dataset_list_files_and_download(kaggle, server):
    assert "heptapod/titanic" in kaggle("datasets", "list", "-s", "titanic")
    newest = server.datasets[("heptapod", "titanic")]["versions"][2]
    files = kaggle("datasets", "files", "heptapod/titanic")
    assert all(name in files for name in newest)
    kaggle("datasets", "download", "heptapod/titanic", "-p", "ds", "--unzip")
    for name, data in newest.items():
        assert (kaggle.work / "ds" / name).read_bytes() == data
