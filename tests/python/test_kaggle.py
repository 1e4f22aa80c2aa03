"""%kaggle through jupyter_client, against the fake Kaggle API in fake_kaggle.py.

One kernel for the module, started with KAGGLE_API_ENDPOINT pointing at the fake server,
KAGGLE_CONFIG_DIR and HOME in a scratch directory, and its log written to a file. Each
test starts with no credentials (no files, the variables emptied with %env) and every
switch of the server off. Every IOPub message the tests read is kept, and the last test
scans them and the kernel log for the key and tokens that were never typed into a cell.
"""

import base64
import hashlib
import io
import json
import os
import queue
import shutil
import socket
import stat
import time
import zipfile

import pytest

from conftest import TIMEOUT, Kernel, Outcome
from fake_kaggle import MODIFIED, TOKENS, USERS, FakeKaggle, corrupt_zip, disguise, intact_zip

ALICE_KEY = USERS["alice"]
CAROL_TOKEN = "KGAT_11111111111111111111111111111111"
DAVE_TOKEN = "KGAT_22222222222222222222222222222222"
ERIN_TOKEN = "KGAT_33333333333333333333333333333333"
# Secrets that only ever travel in files or hidden input: none may show anywhere.
NEVER_SHOWN = [ALICE_KEY, CAROL_TOKEN, ERIN_TOKEN, base64.b64encode(f"alice:{ALICE_KEY}".encode()).decode()]
CREDENTIAL_VARIABLES = ["KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_COMPETITION", "KAGGLE_PATH", "KAGGLE_PROXY", "KAGGLE_API_ENVIRONMENT"]
# Settings a test may change with %env; emptied (unset) before each test.
SETTING_VARIABLES = ["FERROLAB_UNZIP_MAX_BYTES", "FERROLAB_UNZIP_MAX_RATIO"]


@pytest.fixture(scope="module")
def server():
    fake = FakeKaggle().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def kk(server, tmp_path_factory):
    """The kernel for this module (see the module docstring)."""
    scratch = tmp_path_factory.mktemp("kaggle")
    config, home = scratch / "config", scratch / "home"
    config.mkdir()
    home.mkdir()
    env = {name: "" for name in CREDENTIAL_VARIABLES}
    env |= {
        "KAGGLE_API_ENDPOINT": server.url,
        "KAGGLE_CONFIG_DIR": str(config),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        # Rust cells still find the toolchain with HOME moved.
        "CARGO_HOME": os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo")),
        "RUSTUP_HOME": os.environ.get("RUSTUP_HOME", os.path.expanduser("~/.rustup")),
        "FERROLAB_LOG_FILE": str(scratch / "kernel.log"),
        "FERROLAB_LOG": "debug",
        # A folder that does not exist yet: the kernel creates it (0700) and the file (0600).
        "FERROLAB_HISTORY_FILE": str(scratch / "history" / "history.jsonl"),
    }
    kernel = Kernel(env=env)
    seen = []
    read = kernel.client.get_iopub_msg

    def recording(*args, **kwargs):
        message = read(*args, **kwargs)
        seen.append(message)
        return message

    kernel.client.get_iopub_msg = recording
    kernel.iopub_seen = seen
    kernel.config_dir = config
    kernel.home = home
    kernel.log = scratch / "kernel.log"
    kernel.history_file = scratch / "history" / "history.jsonl"
    yield kernel
    kernel.shutdown()


@pytest.fixture(autouse=True)
def clean(kk, server):
    """No credentials, no settings, every switch off, the kernel in its own folder."""
    server.reset()
    for folder in (kk.config_dir, kk.home):
        for item in folder.iterdir():
            shutil.rmtree(item) if item.is_dir() else item.unlink()
    lines = [f"%env {name}=" for name in CREDENTIAL_VARIABLES + SETTING_VARIABLES]
    lines += [f"%env KAGGLE_API_ENDPOINT={server.url}", f"%cd -q {os.getcwd()}"]
    assert kk.execute("\n".join(lines)).status == "ok"
    yield


@pytest.fixture
def alice(kk):
    """kaggle.json with alice's username and key, mode 0600."""
    path = kk.config_dir / "kaggle.json"
    path.write_text(json.dumps({"username": "alice", "key": ALICE_KEY}))
    path.chmod(0o600)
    return path


def everything(outcome):
    """All the text a cell showed: streams, results, displays, the error."""
    return json.dumps(outcome.outputs)


def result(outcome):
    results = outcome.of_type("execute_result")
    assert results, (outcome.content, outcome.outputs)
    return results[-1]["data"]


def error(outcome):
    assert outcome.status == "error", outcome.outputs
    return outcome.error()


def auth_of(request):
    return request["headers"].get("authorization", "")


def md5(data):
    return hashlib.md5(data).hexdigest()


def blob_data(server, competition, name):
    return server.competitions[competition]["files"][name]


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --- help, credentials -----------------------------------------------------------------


def test_help_lists_every_command(kk):
    page = kk.execute("%kaggle?").content["payload"][0]["data"]["text/plain"]
    for command in ["competitions download", "competitions submit", "leaderboard", "datasets download", "config view", "login", "whoami", "KAGGLE_API_ENDPOINT"]:
        assert command in page, command
    assert "--unzip" in kk.execute("%kaggle competitions download --help").result_text()
    usage = error(kk.execute("%kaggle competitions frobnicate"))
    assert usage["ename"] == "UsageError"


def test_without_credentials_it_says_where_it_looked(kk):
    failure = error(kk.execute("%kaggle competitions list"))
    assert failure["ename"] == "KaggleAuthError"
    text = failure["evalue"]
    assert "No Kaggle credentials found" in text
    assert "KAGGLE_API_TOKEN (not set)" in text
    assert f"{kk.config_dir}/kaggle.json (no such file)" in text
    assert "%kaggle login" in text


def test_login_asks_with_a_hidden_prompt_and_saves_0600(kk, server):
    outcome = kk.execute("%kaggle login", allow_stdin=True, answers=["alice", ALICE_KEY])
    assert outcome.status == "ok", outcome.outputs
    assert [i["password"] for i in outcome.inputs] == [False, True]
    assert "username" in outcome.inputs[0]["prompt"].lower()
    saved = kk.config_dir / "kaggle.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text()) == {"username": "alice", "key": ALICE_KEY}
    assert f"Saved the Kaggle credentials of alice to {saved} (mode 0600)" in outcome.stream_text()
    whoami = kk.execute("%kaggle whoami").stream_text()
    assert "Kaggle user: alice" in whoami
    assert f"Credentials: {saved}, sent as a username and API key (HTTP Basic)" in whoami
    basic = "Basic " + base64.b64encode(f"alice:{ALICE_KEY}".encode()).decode()
    assert auth_of(server.calls("POST")[-1]) == basic


def test_login_without_input_needs_flags_and_token_login_writes_access_token(kk):
    usage = error(kk.execute("%kaggle login"))
    assert usage["ename"] == "UsageError" and "--username" in usage["evalue"]
    outcome = kk.execute(f"%kaggle login --token {DAVE_TOKEN}")
    token_file = kk.config_dir / "access_token"
    assert outcome.status == "ok" and token_file.read_text() == DAVE_TOKEN + "\n"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert "Kaggle user: dave" in kk.execute("%kaggle whoami").stream_text()


def test_credential_sources_in_the_official_order(kk, server, alice):
    def whoami():
        outcome = kk.execute("%kaggle whoami")
        assert outcome.status == "ok", outcome.outputs
        return outcome.stream_text()

    text = whoami()
    assert "Kaggle user: alice" in text and f"Credentials: {alice}," in text
    kk.execute(f"%env KAGGLE_USERNAME=bob\n%env KAGGLE_KEY={USERS['bob']}")
    text = whoami()
    assert "Kaggle user: bob" in text
    assert "the KAGGLE_USERNAME and KAGGLE_KEY environment variables" in text
    assert f"Also found, not used (later in the order): {alice}" in text
    assert auth_of(server.calls("POST")[-1]).startswith("Basic ")
    token_file = kk.config_dir / "access_token"
    token_file.write_text(CAROL_TOKEN + "\n")
    text = whoami()
    assert "Kaggle user: carol" in text and f"the token file {token_file}" in text
    assert "access token (Bearer)" in text
    assert auth_of(server.calls("POST")[-1]) == f"Bearer {CAROL_TOKEN}"
    introspect = server.calls("POST", "security.OAuthService/IntrospectToken")[-1]
    assert introspect["json"] == {"token": CAROL_TOKEN}
    kk.execute(f"%env KAGGLE_API_TOKEN={DAVE_TOKEN}")
    text = whoami()
    assert "Kaggle user: dave" in text and "the KAGGLE_API_TOKEN environment variable" in text
    erin_file = kk.home / "erin-token.txt"
    erin_file.write_text(f"  {ERIN_TOKEN}\n")
    kk.execute(f"%env KAGGLE_API_TOKEN={erin_file}")
    text = whoami()
    assert "Kaggle user: erin" in text and f"the file {erin_file} named by KAGGLE_API_TOKEN" in text


def test_a_kaggle_json_readable_by_others_gets_the_cli_warning(kk, alice):
    alice.chmod(0o644)
    outcome = kk.execute("%kaggle whoami")
    assert outcome.status == "ok"
    assert (
        "Warning: Your Kaggle API key is readable by other users on this system! "
        f"To fix this, you can run 'chmod 600 {alice}'"
    ) in outcome.stream_text("stderr")
    alice.chmod(0o600)
    assert "readable by other users" not in kk.execute("%kaggle whoami").stream_text("stderr")


# --- errors ------------------------------------------------------------------------------


def test_rejected_credentials_say_which_source_and_never_echo_the_key(kk, server):
    wrong = "wrong-secret-key-987654"
    path = kk.config_dir / "kaggle.json"
    path.write_text(json.dumps({"username": "alice", "key": wrong}))
    path.chmod(0o600)
    outcome = kk.execute("%kaggle competitions list")
    failure = error(outcome)
    assert failure["ename"] == "KaggleAuthError"
    assert f"Kaggle rejected the credentials from {path} (401 Unauthorized)" in failure["evalue"]
    assert "%kaggle login" in failure["evalue"]
    # The fake server echoes what it was sent in its message; the kernel must not show it.
    assert wrong not in everything(outcome)
    assert base64.b64encode(f"alice:{wrong}".encode()).decode() not in everything(outcome)


@pytest.mark.parametrize("form", ["upper", "percent", "spaced"])
def test_a_key_echoed_back_in_disguise_is_scrubbed(kk, server, form):
    wrong = "Wr0ng+Key/With=Odd~chars-4242"
    path = kk.config_dir / "kaggle.json"
    path.write_text(json.dumps({"username": "alice", "key": wrong}))
    path.chmod(0o600)
    server.echo_form = form
    outcome = kk.execute("%kaggle competitions list")
    failure = error(outcome)
    # The server's message arrived, with what it echoed masked.
    assert "Kaggle said: Unauthenticated: invalid credentials ***" in failure["evalue"], failure["evalue"]
    shown = everything(outcome)
    for secret in [wrong, f"alice:{wrong}"]:
        assert disguise(secret, form) not in shown
        assert secret not in shown


def test_a_json_code_is_an_error_even_under_http_200(kk, server, alice):
    server.code_in_body = True
    assert error(kk.execute("%kaggle competitions list"))["ename"] == "KaggleAuthError"


def test_forbidden_points_at_the_rules_of_that_competition(kk, alice):
    failure = error(kk.execute("%kaggle competitions download -c spaceship-titanic -f train.csv"))
    assert failure["ename"] == "KaggleForbidden"
    assert "You must accept this competition's rules" in failure["evalue"]
    assert "https://www.kaggle.com/competitions/spaceship-titanic/rules" in failure["evalue"]


def test_not_found_names_what_was_asked_for(kk, alice):
    failure = error(kk.execute("%kaggle competitions files -c no-such-competition"))
    assert failure["ename"] == "KaggleNotFound"
    assert failure["evalue"].startswith("Competition `no-such-competition` was not found (404)")
    failure = error(kk.execute("%kaggle datasets files nobody/nothing"))
    assert failure["evalue"].startswith("Dataset `nobody/nothing` was not found (404)")
    failure = error(kk.execute("%kaggle competitions download -c titanic -f nope.csv"))
    assert failure["evalue"].startswith("File `nope.csv` of competition `titanic` was not found")


def test_rate_limits_say_when_to_retry_or_are_waited_out(kk, server, alice):
    server.rate_limit_next, server.retry_after = 1, "3600"
    failure = error(kk.execute("%kaggle competitions list"))
    assert failure["ename"] == "KaggleRateLimited"
    assert "Retry in 3600 s (after " in failure["evalue"]
    before = len(server.calls("POST", "ListCompetitions"))
    server.rate_limit_next, server.retry_after = 1, "1"
    assert kk.execute("%kaggle competitions list").status == "ok"
    assert len(server.calls("POST", "ListCompetitions")) - before == 2


def test_server_errors_are_retried_with_backoff(kk, server, alice):
    server.fail_next = 2
    assert kk.execute("%kaggle competitions files -c titanic").status == "ok"
    assert len(server.calls("POST", "ListDataFiles")) == 3
    server.fail_next = 10
    failure = error(kk.execute("%kaggle competitions files -c titanic"))
    assert failure["ename"] == "KaggleServerError"
    assert "HTTP 500 (4 tries)" in failure["evalue"]


def test_network_errors_name_the_host_and_why(kk, alice):
    # Bound but never listening, and held for the whole cell: nobody else can take the
    # port, and connecting to it is refused.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        kk.execute(f"%env KAGGLE_API_ENDPOINT=http://127.0.0.1:{port}")
        failure = error(kk.execute("%kaggle competitions list"))
    assert failure["ename"] == "KaggleNetworkError"
    assert failure["evalue"].startswith(f"Could not reach 127.0.0.1:{port}: ")
    assert "refused" in failure["evalue"].lower()


# --- listings ------------------------------------------------------------------------------


def test_competition_list_and_files_are_tables(kk, server, alice):
    data = result(kk.execute("%kaggle competitions list -s titanic"))
    assert "titanic" in data["text/plain"] and "spaceship-titanic" in data["text/plain"]
    assert "big-data" not in data["text/plain"]
    assert '<a href="https://www.kaggle.com/competitions/titanic"' in data["text/html"]
    body = server.calls("POST", "ListCompetitions")[-1]["json"]
    assert body == {"group": "COMPETITION_LIST_TAB_EVERYTHING", "category": "HOST_SEGMENT_UNSPECIFIED", "sortBy": "COMPETITION_SORT_BY_BEST", "search": "titanic", "page": 1, "pageToken": ""}
    files = result(kk.execute("%kaggle competitions files titanic"))
    plain = files["text/plain"]
    assert plain.splitlines()[0].split() == ["name", "size", "created", "(UTC)"]
    assert "gender_submission.csv" in plain and "train.csv" in plain
    assert "2024-10-01 10:00" in plain and "3 files" in plain
    assert "<table>" in files["text/html"] and "<td>train.csv</td>" in files["text/html"]
    assert server.calls("POST", "ListDataFiles")[-1]["json"]["competitionName"] == "titanic"


def test_competition_urls_and_the_configured_default(kk, server, alice, tmp_path):
    assert "train.csv" in result(kk.execute("%kaggle competitions files https://www.kaggle.com/competitions/titanic/data"))["text/plain"]
    assert kk.execute("%kaggle config set -n competition -v https://www.kaggle.com/c/titanic").stream_text() == "- competition is now set to: titanic\n"
    outcome = kk.execute("%kaggle competitions files")
    assert outcome.stream_text() == "Using competition: titanic\n"
    assert "train.csv" in result(outcome)["text/plain"]
    kk.execute(f"%kaggle config set -n path -v {tmp_path}")
    view = kk.execute("%kaggle config view").stream_text()
    assert f"Configuration values from {kk.config_dir}" in view
    assert "- username: alice" in view and "- competition: titanic" in view and f"- path: {tmp_path}" in view
    assert kk.execute("%kaggle competitions download -f train.csv -q").status == "ok"
    saved = tmp_path / "competitions" / "titanic" / "train.csv"
    assert saved.read_bytes() == blob_data(server, "titanic", "train.csv")
    settings = json.loads((kk.config_dir / "kaggle.json").read_text())
    assert settings["competition"] == "titanic" and settings["key"] == ALICE_KEY
    assert stat.S_IMODE((kk.config_dir / "kaggle.json").stat().st_mode) == 0o600
    assert kk.execute("%kaggle config unset -n competition").stream_text() == "- competition is now unset\n"
    assert "No competition specified" in error(kk.execute("%kaggle competitions files"))["evalue"]
    assert error(kk.execute("%kaggle config set -n key -v x"))["ename"] == "UsageError"


# --- downloads -----------------------------------------------------------------------------


def test_download_shows_progress_sets_mtime_and_skips_when_up_to_date(kk, server, alice, tmp_path):
    outcome = kk.execute(f"%kaggle competitions download -c titanic -f train.csv -p {tmp_path}")
    assert outcome.status == "ok", outcome.outputs
    saved = tmp_path / "train.csv"
    assert saved.read_bytes() == blob_data(server, "titanic", "train.csv")
    assert saved.stat().st_mtime == MODIFIED
    assert f"Saved {saved}" in outcome.stream_text()
    assert listing(tmp_path) == ["train.csv"]
    displays = outcome.of_type("display_data")
    updates = outcome.of_type("update_display_data")
    assert len(displays) == 1 and updates
    display_id = displays[0]["transient"]["display_id"]
    assert all(u["transient"]["display_id"] == display_id for u in updates)
    assert "100%" in updates[-1]["data"]["text/plain"]
    assert "100%" in updates[-1]["data"]["text/html"]
    # Credentials went to the API only, never to the storage host.
    assert auth_of(server.calls("POST", "DownloadDataFile")[-1])
    assert all(not auth_of(get) for get in server.calls("GET"))
    again = kk.execute(f"%kaggle competitions download -c titanic -f train.csv -p {tmp_path}")
    assert "up to date" in again.stream_text() and "--force" in again.stream_text()
    assert not again.of_type("update_display_data")
    forced = kk.execute(f"%kaggle competitions download -c titanic -f train.csv -p {tmp_path} --force")
    assert f"Saved {saved}" in forced.stream_text()
    quiet = kk.execute(f"%kaggle competitions download -c titanic -f test.csv -p {tmp_path} --quiet")
    assert quiet.status == "ok" and quiet.outputs == []
    assert (tmp_path / "test.csv").read_bytes() == blob_data(server, "titanic", "test.csv")


def test_unzip_extracts_checks_and_deletes_the_zip(kk, server, alice, tmp_path):
    outcome = kk.execute(f"%kaggle competitions download -c titanic -p {tmp_path} --unzip")
    assert outcome.status == "ok", outcome.outputs
    assert f"Saved {tmp_path / 'titanic.zip'}" in outcome.stream_text()
    assert f"Extracted 3 files" in outcome.stream_text()
    visible = [name for name in listing(tmp_path) if not name.startswith(".")]
    assert visible == ["gender_submission.csv", "test.csv", "train.csv"]
    for name in visible:
        assert (tmp_path / name).read_bytes() == blob_data(server, "titanic", name)
    again = kk.execute(f"%kaggle competitions download -c titanic -p {tmp_path} --unzip")
    assert "up to date (already downloaded and extracted" in again.stream_text()
    assert not (tmp_path / "titanic.zip").exists()


def test_a_corrupt_zip_is_kept_and_nothing_is_half_extracted(kk, alice, tmp_path):
    failure = error(kk.execute(f"%kaggle competitions download -c broken-zip -p {tmp_path} --unzip"))
    assert failure["ename"] == "KaggleUnzipError"
    assert "is corrupt: entry `second.csv`" in failure["evalue"]
    assert "the zip is kept" in failure["evalue"]
    assert listing(tmp_path) == ["broken-zip.zip"]


def test_zip_slip_is_refused_and_nothing_is_written_outside(kk, alice, tmp_path):
    target = tmp_path / "data"
    failure = error(kk.execute(f"%kaggle competitions download -c evil-zip -p {target} --unzip"))
    assert failure["ename"] == "KaggleUnzipError"
    assert "entry `../evil.txt` would be written outside" in failure["evalue"]
    assert listing(tmp_path) == ["data", "data/evil-zip.zip"]


def hostile_zip(members):
    """A zip of (name, bytes) members, names exactly as given (Python's zipfile keeps them)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(zipfile.ZipInfo(name, date_time=(2024, 10, 1, 10, 0, 0)), data, zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def zeros_zip(name, mib):
    """A small zip holding `mib` MiB of zeros (a zip bomb), written as a stream."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open(name, "w") as member:
            block = bytes(1 << 20)
            for _ in range(mib):
                member.write(block)
    return buffer.getvalue()


def test_unzip_never_replaces_a_user_folder_with_a_file(kk, server, alice, tmp_path):
    server.archives["evil-zip"] = hostile_zip([("other.txt", b"x\n"), ("mydir", b"a plain file\n")])
    (tmp_path / "mydir").mkdir()
    (tmp_path / "mydir" / "precious.txt").write_text("precious")
    failure = error(kk.execute(f"%kaggle competitions download -c evil-zip -p {tmp_path} --unzip"))
    assert failure["ename"] == "KaggleUnzipError"
    assert "entry `mydir`" in failure["evalue"]
    assert "never replaces a folder with a file" in failure["evalue"]
    assert (tmp_path / "mydir" / "precious.txt").read_text() == "precious"
    assert listing(tmp_path) == ["evil-zip.zip", "mydir", "mydir/precious.txt"]


def test_unzip_never_follows_a_link_in_the_destination(kk, server, alice, tmp_path):
    server.archives["evil-zip"] = hostile_zip([("fine.txt", b"ok\n"), ("images/pwn.txt", b"pwned\n")])
    elsewhere, data = tmp_path / "elsewhere", tmp_path / "data"
    elsewhere.mkdir()
    data.mkdir()
    (data / "images").symlink_to(elsewhere)
    failure = error(kk.execute(f"%kaggle competitions download -c evil-zip -p {data} --unzip"))
    assert failure["ename"] == "KaggleUnzipError"
    assert "entry `images/pwn.txt`" in failure["evalue"] and "symbolic link" in failure["evalue"]
    assert listing(elsewhere) == []
    assert sorted(p.name for p in data.iterdir()) == ["evil-zip.zip", "images"]


def test_absolute_entries_are_refused_not_rerooted(kk, server, alice, tmp_path):
    server.archives["evil-zip"] = hostile_zip([("fine.txt", b"ok\n"), ("/abs/evil.txt", b"gotcha\n")])
    failure = error(kk.execute(f"%kaggle competitions download -c evil-zip -p {tmp_path} --unzip"))
    assert failure["ename"] == "KaggleUnzipError"
    assert "entry `/abs/evil.txt` has an absolute path" in failure["evalue"]
    assert listing(tmp_path) == ["evil-zip.zip"]


def test_unzip_refuses_a_bomb_and_its_limits_are_settings(kk, server, alice, tmp_path):
    bomb = zeros_zip("zeros.bin", 100)
    assert len(bomb) < 1 << 20
    server.archives["evil-zip"] = bomb
    cell = f"%kaggle competitions download -c evil-zip -p {tmp_path} --unzip"
    failure = error(kk.execute(cell))
    assert failure["ename"] == "KaggleUnzipError"
    assert "would expand to 104.9 MB" in failure["evalue"]
    assert "FERROLAB_UNZIP_MAX_RATIO" in failure["evalue"]
    assert listing(tmp_path) == ["evil-zip.zip"]
    # A user who expects it can allow it.
    kk.execute("%env FERROLAB_UNZIP_MAX_RATIO=2000")
    outcome = kk.execute(cell)
    assert outcome.status == "ok", outcome.outputs
    assert (tmp_path / "zeros.bin").stat().st_size == 100 << 20
    # A size limit refuses even an ordinary archive.
    titanic = tmp_path / "titanic"
    kk.execute("%env FERROLAB_UNZIP_MAX_BYTES=10k")
    failure = error(kk.execute(f"%kaggle competitions download -c titanic -p {titanic} --unzip"))
    assert "more than the limit of 10.0 kB (FERROLAB_UNZIP_MAX_BYTES)" in failure["evalue"]
    assert listing(titanic) == ["titanic.zip"]
    kk.execute("%env FERROLAB_UNZIP_MAX_BYTES=lots")
    failure = error(kk.execute(f"%kaggle competitions download -c titanic -p {titanic} --unzip"))
    assert failure["ename"] == "UsageError" and "FERROLAB_UNZIP_MAX_BYTES=lots" in failure["evalue"]


def test_a_zip_that_failed_to_extract_is_downloaded_again_by_the_same_cell(kk, server, alice, tmp_path):
    # Same length and Last-Modified as the good archive: only a new download can tell them apart.
    assert len(corrupt_zip()) == len(intact_zip())
    cell = f"%kaggle competitions download -c broken-zip -p {tmp_path} --unzip"
    failure = error(kk.execute(cell))
    assert "is corrupt" in failure["evalue"] and "running the command again downloads it again" in failure["evalue"]
    downloads = len(server.calls("GET"))
    server.archives["broken-zip"] = intact_zip()
    outcome = kk.execute(cell)  # what Run All does: the same cell, no --force
    assert outcome.status == "ok", outcome.outputs
    assert len(server.calls("GET")) == downloads + 1
    with zipfile.ZipFile(io.BytesIO(intact_zip())) as archive:
        assert (tmp_path / "second.csv").read_bytes() == archive.read("second.csv")
    assert not (tmp_path / "broken-zip.zip").exists()


def test_a_cut_connection_is_resumed_in_the_same_run(kk, server, alice, tmp_path):
    server.cut_after, server.cut_count = 1_000_000, 1
    outcome = kk.execute(f"%kaggle competitions download -c big-data -f medium.bin -p {tmp_path}")
    assert outcome.status == "ok", outcome.outputs
    assert md5((tmp_path / "medium.bin").read_bytes()) == md5(blob_data(server, "big-data", "medium.bin"))
    ranged = [g for g in server.calls("GET") if "range" in g["headers"]]
    assert ranged and ranged[0]["headers"]["range"] == f"bytes=1000000-{(4 << 20) - 1}"
    assert ranged[0]["headers"]["if-range"] == server.blobs["competitions/big-data/medium.bin"].etag


def test_a_failed_download_leaves_a_part_that_a_range_request_completes(kk, server, alice, tmp_path):
    server.cut_after, server.cut_count, server.fail_after_cut = 1_000_000, 1, 50
    failure = error(kk.execute(f"%kaggle competitions download -c big-data -f medium.bin -p {tmp_path}"))
    assert failure["ename"] == "KaggleNetworkError"
    assert "failed 5 times in a row, last: HTTP 503 from the storage host" in failure["evalue"]
    assert f"{tmp_path / 'medium.bin.part'} (1.0 MB of 4.2 MB) is kept: run the same command again to resume" in failure["evalue"]
    assert listing(tmp_path) == ["medium.bin.part", "medium.bin.part.json"]
    server.reset()
    outcome = kk.execute(f"%kaggle competitions download -c big-data -f medium.bin -p {tmp_path}")
    assert outcome.status == "ok", outcome.outputs
    assert listing(tmp_path) == ["medium.bin"]
    assert md5((tmp_path / "medium.bin").read_bytes()) == md5(blob_data(server, "big-data", "medium.bin"))
    first = server.calls("GET")[0]
    assert first["headers"]["range"] == f"bytes=1000000-{(4 << 20) - 1}"
    assert first["headers"]["if-range"] == server.blobs["competitions/big-data/medium.bin"].etag


def test_an_expired_signed_url_is_replaced_by_asking_the_api_again(kk, server, alice, tmp_path):
    server.one_use_signatures = True
    server.cut_after, server.cut_count = 500_000, 1
    outcome = kk.execute(f"%kaggle competitions download -c big-data -f medium.bin -p {tmp_path}")
    assert outcome.status == "ok", outcome.outputs
    assert md5((tmp_path / "medium.bin").read_bytes()) == md5(blob_data(server, "big-data", "medium.bin"))
    assert len(server.calls("POST", "DownloadDataFile")) == 2
    signatures = [g["signature"] for g in server.calls("GET")]
    assert len(set(signatures)) == 2


def test_large_files_come_in_parallel_ranges(kk, server, alice, tmp_path):
    outcome = kk.execute(f"%kaggle competitions download -c big-data -f big.bin -p {tmp_path}")
    assert outcome.status == "ok", outcome.outputs
    assert md5((tmp_path / "big.bin").read_bytes()) == md5(blob_data(server, "big-data", "big.bin"))
    ranged = [g for g in server.calls("GET") if "range" in g["headers"]]
    assert len(ranged) >= 2, [g["headers"] for g in server.calls("GET")]
    assert "100%" in outcome.of_type("update_display_data")[-1]["data"]["text/plain"]


def test_interrupt_keeps_the_part_and_the_kernel_usable(kk, server, alice, tmp_path):
    server.throttle = 0.05
    client = kk.client
    msg_id = client.execute(f"%kaggle competitions download -c big-data -f medium.bin -p {tmp_path}")
    deadline = time.monotonic() + TIMEOUT
    progressed = False
    while not progressed:
        assert time.monotonic() < deadline, "no progress update arrived"
        try:
            message = client.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        progressed = message["parent_header"].get("msg_id") == msg_id and message["msg_type"] == "update_display_data"
    kk.manager.interrupt_kernel()
    outcome = Outcome(reply=None)
    while outcome.reply is None:
        reply = client.get_shell_msg(timeout=TIMEOUT)
        if reply["parent_header"].get("msg_id") == msg_id:
            outcome.reply = reply
    assert outcome.content["status"] == "error"
    assert outcome.content["ename"] == "Interrupted"
    assert "medium.bin.part" in outcome.content["evalue"]
    assert "run the same command again to resume" in outcome.content["evalue"]
    assert listing(tmp_path) == ["medium.bin.part", "medium.bin.part.json"]
    kept = json.loads((tmp_path / "medium.bin.part.json").read_text())
    assert 0 < sum(segment["have"] for segment in kept["segments"]) < 4 << 20
    assert "X-Goog-Signature" not in kept["url"]
    assert kk.execute("1 + 1").result_text() == "2"
    server.reset()
    assert kk.execute(f"%kaggle competitions download -c big-data -f medium.bin -p {tmp_path}").status == "ok"
    assert md5((tmp_path / "medium.bin").read_bytes()) == md5(blob_data(server, "big-data", "medium.bin"))
    assert server.calls("GET")[0]["headers"]["range"].startswith("bytes=")


# --- submissions, leaderboard --------------------------------------------------------------


def test_submit_wait_and_submissions(kk, server, alice, tmp_path):
    preds = tmp_path / "preds.csv"
    preds.write_text("PassengerId,Survived\n892,0\n893,1\n")
    kk.execute(f"%cd -q {tmp_path}")
    outcome = kk.execute('%kaggle competitions submit -c titanic -f preds.csv -m "first try" --wait --poll-interval 0.1')
    assert outcome.status == "ok", outcome.outputs
    assert "Successfully submitted to Titanic - Machine Learning from Disaster (submission" in outcome.stream_text()
    assert "submissions left today" in outcome.stream_text()
    assert "public score 0.77511" in outcome.result_text()
    start = server.calls("POST", "StartSubmissionUpload")[-1]["json"]
    assert start["competitionName"] == "titanic" and start["fileName"] == "preds.csv"
    assert start["contentLength"] == preds.stat().st_size
    assert start["lastModifiedEpochSeconds"] == int(preds.stat().st_mtime)
    put = server.calls("PUT")[-1]
    assert put["size"] == preds.stat().st_size and not auth_of(put)
    create = server.calls("POST", "CreateSubmission")[-1]["json"]
    issued = [u["token"] for u in server.uploads.values()]
    assert create["blobFileTokens"] == issued[-1]
    assert create["submissionDescription"] == "first try"

    (tmp_path / "bad.csv").write_text("bad\n")
    failure = error(kk.execute("%kaggle competitions submit titanic -f bad.csv -m broken --wait --poll-interval 0.1"))
    assert failure["ename"] == "KaggleSubmissionError"
    assert "Submission file has 3 rows, expected 418 rows." in failure["evalue"]

    table = result(kk.execute("%kaggle competitions submissions -c titanic"))["text/plain"]
    lines = table.splitlines()
    assert lines[0].split() == ["ref", "fileName", "date", "(UTC)", "description", "status", "publicScore", "privateScore", "error"]
    assert "bad.csv" in lines[2] and "ERROR" in lines[2] and "Submission file has 3 rows" in lines[2]
    assert "preds.csv" in lines[3] and "COMPLETE" in lines[3] and "0.77511" in lines[3]
    assert "SUBMISSION_STATUS" not in table


def test_leaderboard_show_and_download(kk, alice, tmp_path):
    shown = result(kk.execute("%kaggle competitions leaderboard titanic --show"))
    assert "Iceberg Dodgers" in shown["text/plain"] and "1.00000" in shown["text/plain"]
    assert "<table>" in shown["text/html"]
    outcome = kk.execute(f"%kaggle competitions leaderboard -c titanic --download -p {tmp_path}")
    assert outcome.status == "ok", outcome.outputs
    with zipfile.ZipFile(tmp_path / "titanic-leaderboard.zip") as archive:
        assert archive.namelist() == ["titanic-publicleaderboard.csv"]
    usage = error(kk.execute("%kaggle competitions leaderboard -c titanic"))
    assert usage["evalue"] == "Either --show or --download must be specified"


# --- datasets, config, endpoint --------------------------------------------------------------


def test_datasets_list_files_and_download(kk, server, alice, tmp_path):
    listed = result(kk.execute("%kaggle datasets list -s titanic"))
    assert "heptapod/titanic" in listed["text/plain"] and "0.88" in listed["text/plain"]
    alice.unlink()  # files and download work without credentials, as on Kaggle
    files = result(kk.execute("%kaggle datasets files heptapod/titanic"))["text/plain"]
    assert "README.md" in files and "titanic.csv" in files
    first = result(kk.execute("%kaggle datasets files -d heptapod/titanic/1"))["text/plain"]
    assert "README.md" not in first and "titanic.csv" in first
    outcome = kk.execute(f"%kaggle datasets download -d heptapod/titanic -p {tmp_path} --unzip")
    assert outcome.status == "ok", outcome.outputs
    text = outcome.stream_text()
    assert "Dataset URL: https://www.kaggle.com/datasets/heptapod/titanic" in text
    assert "License(s): CC0-1.0" in text
    assert f"Saved {tmp_path / 'titanic.zip'}" in text
    versions = server.datasets[("heptapod", "titanic")]["versions"]
    assert (tmp_path / "titanic.csv").read_bytes() == versions[2]["titanic.csv"]
    assert not (tmp_path / "titanic.zip").exists()
    one = tmp_path / "v1"
    url = "https://www.kaggle.com/datasets/heptapod/titanic/versions/1"
    assert kk.execute(f"%kaggle datasets download {url} -f titanic.csv -p {one} -q").status == "ok"
    assert (one / "titanic.csv").read_bytes() == versions[1]["titanic.csv"]
    request = server.calls("POST", "DownloadDataset")[-1]["json"]
    assert request == {"ownerSlug": "heptapod", "datasetSlug": "titanic", "datasetVersionNumber": 1, "fileName": "titanic.csv"}
    assert not auth_of(server.calls("POST", "DownloadDataset")[-1])


def test_config_view_hides_a_proxy_password(kk, alice):
    proxy = "http://me:proxy-pass-7777@127.0.0.1:3128"
    outcome = kk.execute(f"%kaggle config set -n proxy -v {proxy}")
    assert outcome.stream_text() == "- proxy is now set to: http://me:<hidden>@127.0.0.1:3128\n"
    assert json.loads((kk.config_dir / "kaggle.json").read_text())["proxy"] == proxy
    view = kk.execute("%kaggle config view")
    assert "- proxy: http://me:<hidden>@127.0.0.1:3128" in view.stream_text()
    kk.execute(f"%env KAGGLE_PROXY={proxy}")
    view = kk.execute("%kaggle config view")
    assert "- proxy: http://me:<hidden>@127.0.0.1:3128 (from KAGGLE_PROXY)" in view.stream_text()
    assert "proxy-pass-7777" not in everything(view)


def test_secrets_typed_into_cells_are_redacted_in_a_private_history(kk):
    key = "typed-key-5555aaaa5555"
    token = "KGAT_55555555555555555555555555555555"
    password = "mirror-pass-5555"
    cells = {
        f"%env KAGGLE_KEY={key}": "%env KAGGLE_KEY=<hidden>",
        f"%set_env KAGGLE_API_TOKEN {token}": "%set_env KAGGLE_API_TOKEN <hidden>",
        f"%kaggle login --username alice --key {key}": "%kaggle login --username alice --key <hidden>",
        f"%kaggle login --token {token}": "%kaggle login --token <hidden>",
        f"%env MIRROR_URL=http://me:{password}@127.0.0.1:9/data": "%env MIRROR_URL=http://me:<hidden>@127.0.0.1:9/data",
    }
    for cell in cells:
        kk.execute(cell)
    stored = [json.loads(line)["input"] for line in kk.history_file.read_text().splitlines()]
    for cell, redacted in cells.items():
        assert redacted in stored, (redacted, stored[-8:])
    text = kk.history_file.read_text()
    for secret in [key, token, password]:
        assert secret not in text
    reply = kk.client.history(hist_access_type="tail", n=len(cells), reply=True, timeout=30)["content"]
    assert [entry[2] for entry in reply["history"]] == list(cells.values())
    assert stat.S_IMODE(kk.history_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(kk.history_file.parent.stat().st_mode) == 0o700


def test_the_endpoint_may_carry_the_api_prefix(kk, server, alice):
    kk.execute(f"%env KAGGLE_API_ENDPOINT={server.url}/api/v1")
    assert kk.execute("%kaggle competitions list").status == "ok"
    assert server.calls("POST")[-1]["path"] == "/api/v1/competitions.CompetitionApiService/ListCompetitions"
    kk.execute(f"%env KAGGLE_API_ENDPOINT={server.url}")
    assert kk.execute("%kaggle competitions list").status == "ok"
    assert server.calls("POST")[-1]["path"] == "/v1/competitions.CompetitionApiService/ListCompetitions"


# --- last: nothing secret leaked anywhere ---------------------------------------------------


def test_no_key_or_token_in_any_iopub_message_or_the_log(kk, server, alice):
    """Makes its own secret-bearing calls (a hidden-prompt login, a key in kaggle.json,
    a token file), so it proves something when it runs alone; then scans everything the
    kernel published and logged (including what earlier tests in the module caused)."""
    seen_before, log_before = len(kk.iopub_seen), len(kk.log.read_text())
    token_file = kk.config_dir / "access_token"
    try:
        assert kk.execute("%kaggle login", allow_stdin=True, answers=["alice", ALICE_KEY]).status == "ok"
        assert kk.execute("%kaggle competitions list").status == "ok"
        token_file.write_text(CAROL_TOKEN + "\n")
        assert "Kaggle user: carol" in everything(kk.execute("%kaggle whoami"))
        assert auth_of(server.calls("POST")[-1]) == f"Bearer {CAROL_TOKEN}"
    finally:
        token_file.unlink(missing_ok=True)
    assert len(kk.iopub_seen) - seen_before > 10  # this test's own cells published
    messages = json.dumps([{k: m[k] for k in ("header", "parent_header", "content")} for m in kk.iopub_seen], default=str)
    log = kk.log.read_text()
    assert "kaggle: POST" in log[log_before:]  # the log was written, so the scan means something
    for secret in NEVER_SHOWN:
        assert secret not in messages
        assert secret not in log
