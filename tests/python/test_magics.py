"""Magics through jupyter_client: directories, shell, environment, files, timing,
introspection and help — and that they work together with Rust code."""

import os
import time

import pytest

from conftest import TIMEOUT


@pytest.fixture(autouse=True)
def back_home(kernel):
    """Each test starts in the kernel's own directory."""
    yield
    kernel.execute(f"%cd -q {os.getcwd()}")


def test_cd_moves_shell_and_rust_together(kernel, tmp_path):
    (tmp_path / "train.csv").write_text("a,b\n1,2\n")
    outcome = kernel.execute(f"%cd {tmp_path}")
    assert outcome.status == "ok"
    assert outcome.stream_text() == f"{tmp_path}\n"
    assert kernel.execute("!pwd").stream_text() == f"{tmp_path}\n"
    assert kernel.execute("std::env::current_dir().unwrap()").result_text() == f'"{tmp_path}"'
    assert kernel.execute('std::fs::read_to_string("train.csv").unwrap()').result_text() == '"a,b\\n1,2\\n"'
    assert kernel.execute("%pwd").result_text() == f'"{tmp_path}"'


def test_cd_to_a_missing_directory_fails_and_moves_nothing(kernel, tmp_path):
    kernel.execute(f"%cd -q {tmp_path}")
    outcome = kernel.execute(f"%cd {tmp_path}/missing")
    assert outcome.status == "error"
    assert outcome.error()["ename"] == "FileNotFoundError"
    assert f"{tmp_path}/missing" in outcome.error()["evalue"]
    assert kernel.execute("!pwd").stream_text() == f"{tmp_path}\n"
    assert kernel.execute("std::env::current_dir().unwrap()").result_text() == f'"{tmp_path}"'
    file = tmp_path / "plain-file"
    file.write_text("x")
    assert "not a directory" in kernel.execute(f"%cd {file}").error()["evalue"]


def test_cd_history_dash_bookmarks_and_stack(kernel, tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second run"
    first.mkdir()
    second.mkdir()
    kernel.execute(f"%cd -q {first}")
    kernel.execute(f'%cd -q "{second}"')
    assert kernel.execute("%cd -").stream_text() == f"{first}\n"
    assert kernel.execute("%cd -q --second").status == "ok"
    assert kernel.execute("%pwd").result_text() == f'"{second}"'
    assert "Directory history" in kernel.execute("%dhist").stream_text()
    kernel.execute(f"%bookmark firstdir {first}")
    assert f"firstdir -> {first}" in kernel.execute("%bookmark -l").stream_text()
    assert kernel.execute("%cd -b firstdir").stream_text() == f"{first}\n"
    assert kernel.execute("%cd -b nosuchmark").error()["ename"] == "UsageError"
    kernel.execute(f'%pushd "{second}"')
    assert kernel.execute("%pwd").result_text() == f'"{second}"'
    assert kernel.execute("%popd").stream_text() == f"popd -> {first}\n"
    assert kernel.execute("%popd").error()["evalue"] == "%popd on empty stack"
    kernel.execute("%bookmark -d firstdir")


def test_shell_interpolates_rust_values_and_keeps_dollar_for_the_shell(kernel):
    kernel.execute("let epochs = 21;")
    outcome = kernel.execute("!echo {epochs * 2} {{literal}} $HOME")
    assert outcome.stream_text() == f"42 {{literal}} {os.environ['HOME']}\n"
    broken = kernel.execute("!echo {no_such_variable_anywhere}")
    assert broken.status == "ok"
    assert broken.stream_text() == "{no_such_variable_anywhere}\n"
    assert "runs as written" in broken.stream_text("stderr")


def test_shell_quotes_interpolated_values_with_q(kernel, tmp_path):
    kernel.execute(f"%cd -q {tmp_path}")
    value = """two  words, it's a "test"; touch PWNED; echo $HOME `id`"""
    assert kernel.execute(f'let nasty = String::from(r#"{value}"#);').status == "ok"
    quoted = kernel.execute("!printf '[%s]\\n' {nasty!q}")
    assert quoted.stream_text() == f"[{value}]\n"
    assert not (tmp_path / "PWNED").exists()
    # Interpolation borrows: the String is still there.
    assert kernel.execute("nasty.len()").result_text() == str(len(value.encode()))
    # {expr} is pasted unquoted, as in IPython: the shell parses the value (see the README).
    kernel.execute('let loose = String::from("a b; touch PWNED");')
    assert kernel.execute("!printf '[%s]\\n' {loose}").stream_text() == "[a]\n[b]\n"
    assert (tmp_path / "PWNED").exists()
    assert kernel.execute("!printf '[%s]\\n' {loose!q}").stream_text() == "[a b; touch PWNED]\n"


def test_shell_output_is_complete_and_batched(kernel):
    outcome = kernel.execute("!yes | head -n 100000")
    streams = [c for c in outcome.of_type("stream") if c["name"] == "stdout"]
    text = "".join(s["text"] for s in streams)
    assert text.count("y\n") == 100000
    assert len(streams) < 1000, f"{len(streams)} messages for 100000 lines"


def test_shell_streams_stderr_and_reports_exit_codes_without_failing(kernel):
    outcome = kernel.execute("!echo out; echo err >&2; exit 3")
    assert outcome.status == "ok"
    assert outcome.stream_text() == "out\n"
    assert "err\n" in outcome.stream_text("stderr")
    assert "exit code 3" in outcome.stream_text("stderr")
    assert "%cd" in kernel.execute("!cd /").stream_text("stderr")


def test_capture_returns_lines(kernel):
    outcome = kernel.execute("!!printf 'a\\nb c\\n'")
    assert outcome.result_text() == '[\n    "a",\n    "b c",\n]'


def test_shell_stdin_gets_input_or_eof(kernel):
    asked = kernel.execute('!read name; echo "hello $name"', allow_stdin=True, answers=["ferris"])
    assert len(asked.inputs) == 1
    assert asked.stream_text() == "hello ferris\n"
    started = time.monotonic()
    closed = kernel.execute('!read name || echo "no input"', allow_stdin=False)
    assert closed.stream_text() == "no input\n"
    assert time.monotonic() - started < TIMEOUT


def test_interrupting_a_shell_command_stops_its_whole_group(kernel, tmp_path):
    marker = tmp_path / "child.pid"
    client = kernel.client
    msg_id = client.execute(f"!sh -c 'echo $$ > {marker}; sleep 60' & wait")
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(marker.read_text())
    started = time.monotonic()
    kernel.manager.interrupt_kernel()
    reply = client.get_shell_msg(timeout=60)
    print(f"!sleep interrupted -> reply in {time.monotonic() - started:.2f}s")
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["content"]["ename"] == "Interrupted"
    assert not running(child), "the background shell of the command survived the interrupt"
    after = kernel.execute("1 + 1")
    assert after.result_text() == "2", (after.content, after.outputs)


def running(pid):
    """Alive and not a zombie (orphans may wait a while for init to reap them)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_env_reaches_shell_and_rust_and_hides_secrets(kernel):
    assert kernel.execute("%env FEROLAB_TEST_FOO=bar").stream_text() == "env: FEROLAB_TEST_FOO=bar\n"
    assert kernel.execute("!echo $FEROLAB_TEST_FOO").stream_text() == "bar\n"
    assert kernel.execute('std::env::var("FEROLAB_TEST_FOO").unwrap()').result_text() == '"bar"'
    kernel.execute("%set_env FEROLAB_TEST_SPACE two words")
    assert kernel.execute("!echo $FEROLAB_TEST_SPACE").stream_text() == "two words\n"
    secret = kernel.execute("%env KAGGLE_KEY=0123456789abcdef")
    assert "0123456789abcdef" not in str(secret.outputs)
    listing = kernel.execute("%env").result_text()
    assert "KAGGLE_KEY=<hidden>" in listing and "FEROLAB_TEST_FOO=bar" in listing
    assert "0123456789abcdef" not in listing
    assert kernel.execute("%env KAGGLE_KEY").result_text() == '"<hidden>"'
    assert kernel.execute("%env NOT_SET_ANYWHERE_42").error()["ename"] == "UsageError"


def test_env_hides_every_kind_of_secret(kernel):
    table = [
        ("FEROLAB_TEST_MYSQL_PWD", "pwd-value-1", "<hidden>"),
        ("FEROLAB_TEST_GITHUB_PAT", "pat-value-2", "<hidden>"),
        ("FEROLAB_TEST_SMTP_PASS", "pass-value-3", "<hidden>"),
        ("FEROLAB_TEST_NPM_AUTH", "auth-value-4", "<hidden>"),
        ("FEROLAB_TEST_CREDENTIALS", "cred-value-5", "<hidden>"),
        ("FEROLAB_TEST_PRIVATE_KEY", "private-value-6", "<hidden>"),
        ("FEROLAB_TEST_DB_URL", "postgres://me:url-pass-7@db:5432/x", "postgres://me:<hidden>@db:5432/x"),
        ("FEROLAB_TEST_PATH_LIKE", "/opt/bin", "/opt/bin"),
    ]
    for name, value, shown in table:
        outcome = kernel.execute(f"%env {name}={value}")
        assert outcome.stream_text() == f"env: {name}={shown}\n", name
        assert kernel.execute(f"%env {name}").result_text() == f'"{shown}"', name
    listing = kernel.execute("%env").result_text()
    for name, value, shown in table:
        assert f"{name}={shown}" in listing, name
        if shown != value:
            assert value not in listing


def test_bash_cell_fails_on_nonzero_exit(kernel):
    outcome = kernel.execute("%%bash\necho before\nexit 3")
    assert outcome.status == "error"
    assert outcome.stream_text() == "before\n"
    assert outcome.error()["ename"] == "CalledProcessError"
    assert "exit code 3" in outcome.error()["evalue"]
    assert kernel.execute("%%sh\necho $0").stream_text() == "sh\n"


def test_writefile_round_trip(kernel, tmp_path):
    path = tmp_path / "config.toml"
    assert kernel.execute(f"%%writefile {path}\nepochs = 3").stream_text() == f"Writing {path}\n"
    assert kernel.execute(f"%%writefile -a {path}\nlr = 0.1").stream_text() == f"Appending to {path}\n"
    assert path.read_text() == "epochs = 3\nlr = 0.1\n"
    assert kernel.execute(f"%%writefile {path}\nnew").stream_text() == f"Overwriting {path}\n"
    assert kernel.execute(f'std::fs::read_to_string("{path}").unwrap()').result_text() == '"new\\n"'
    assert kernel.execute(f"%%writefile {tmp_path}/no/such/dir/f.txt\nx").error()["ename"] == "OSError"


def test_timeit_and_time(kernel):
    kernel.execute("let numbers: Vec<u64> = (0..1000).collect();")
    timeit = kernel.execute("%timeit -r 3 numbers.iter().sum::<u64>()").stream_text()
    assert " per loop (mean ± std. dev. of 3 runs, " in timeit and " loops each)" in timeit
    # The first line is the figure; a "slowest run" warning may follow it.
    first_line = kernel.execute("%timeit -n 5 -r 2 numbers.len()").stream_text().splitlines()[0]
    assert first_line.endswith("(mean ± std. dev. of 2 runs, 5 loops each)")
    timed = kernel.execute("%time numbers.len()")
    assert timed.result_text() == "1000"
    report = timed.stream_text()
    assert report.startswith("CPU times: user ") and "Wall time: " in report and "Compile time: " in report
    cell = kernel.execute("%%time\nlet kept_after_time = 5;\nkept_after_time * 2")
    assert cell.result_text() == "10"
    assert kernel.execute("kept_after_time").result_text() == "5"


def test_mixed_cell_runs_in_order_and_stops_at_the_first_failure(kernel):
    outcome = kernel.execute('println!("one");\n!echo two\n%cd /nonexistent-dir\n!echo never')
    assert outcome.status == "error"
    assert outcome.stream_text() == "one\ntwo\n"
    assert "never" not in str(outcome.outputs)


def test_magic_lines_inside_rust_stay_rust(kernel):
    outcome = kernel.execute('let text = "\n%cd nowhere\n!rm -rf nothing\n";\ntext.lines().count()')
    assert outcome.status == "ok"
    assert outcome.result_text() == "3"  # "", "%cd nowhere", "!rm -rf nothing"


def test_who_whos_history_and_lsmagic(kernel):
    kernel.execute("let listed_for_who: f64 = 1.5;")
    assert "listed_for_who" in kernel.execute("%who").stream_text()
    assert "listed_for_who  " in kernel.execute("%whos").stream_text()
    assert "f64" in kernel.execute("%whos").stream_text()
    history = kernel.execute("%history -l 3 -n").stream_text()
    assert "%whos" in history and "/" in history
    listing = kernel.execute("%lsmagic").result_text()
    assert "%cd" in listing and "%%bash" in listing
    assert "%timeit" in kernel.execute("%magic").stream_text()


def test_unknown_magic_names_the_close_ones(kernel):
    error = kernel.execute("%cdd /tmp").error()
    assert error["ename"] == "UsageError"
    assert "%cd" in error["evalue"]
    assert "%%bash" in kernel.execute("%bash").error()["evalue"]


def test_magic_help_is_a_pager_payload(kernel):
    for query in ("%cd?", "?%env", "%%bash?"):
        payload = kernel.execute(query).content["payload"]
        assert len(payload) == 1 and payload[0]["source"] == "page", query
        assert "text/plain" in payload[0]["data"]


def test_magic_completion(kernel):
    reply = kernel.client.complete("%pw", cursor_pos=3, reply=True, timeout=30)["content"]
    assert reply["matches"] == ["%pwd"]
    assert (reply["cursor_start"], reply["cursor_end"]) == (0, 3)


def test_directory_and_environment_survive_a_runtime_crash(kernel, tmp_path):
    kernel.execute(f"%cd -q {tmp_path}")
    kernel.execute("%env FEROLAB_AFTER_CRASH=yes")
    assert kernel.execute("std::process::abort()").status == "error"
    assert kernel.execute("std::env::current_dir().unwrap()").result_text() == f'"{tmp_path}"'
    assert kernel.execute('std::env::var("FEROLAB_AFTER_CRASH").unwrap()').result_text() == '"yes"'


def test_the_tutorial_lines_work_or_answer_the_ferrolab_way(kernel, tmp_path):
    """The Colab tutorial's lines typed verbatim: shell lines keep working, `!kaggle` without
    the CLI and Python lines in a Rust cell answer with the ferrolab way, in one line each."""
    assert kernel.execute(f"%cd {tmp_path}").status == "ok"
    (tmp_path / "gdrive" / "My Drive" / "hw2").mkdir(parents=True)
    (tmp_path / "kaggle.json").write_text("{}")
    for line in ["!pwd", "!ls", "!mkdir -p .kaggle", "!cp kaggle.json .kaggle/", "!chmod 600 .kaggle/kaggle.json",
                 "!pip --version", r"%cd gdrive/My\ Drive/hw2"]:
        outcome = kernel.execute(line)
        assert outcome.status == "ok" and "exit code" not in outcome.stream_text("stderr"), (line, outcome.outputs)
    assert (tmp_path / ".kaggle" / "kaggle.json").stat().st_mode & 0o777 == 0o600
    assert kernel.execute("%pwd").result_text().strip("'\"").endswith("gdrive/My Drive/hw2")
    env_without_kaggle = "PATH=/usr/bin:/bin"
    for line, answer in [
        ("!kaggle competitions download -c titanic", "%kaggle competitions download -c titanic"),
        ("!kaggle competitions submit -c titanic -f submission.csv -m first", "%kaggle competitions submit -c titanic -f submission.csv -m first"),
        ("!kaggle config set -n path -v /content", "%kaggle config set -n path -v /content"),
    ]:
        outcome = kernel.execute(f"%env {env_without_kaggle}\n{line}")
        assert answer in outcome.stream_text("stderr"), (line, outcome.outputs)
    kernel.execute(f"%env PATH={os.environ['PATH']}")
    for line, answer in [
        ("from google.colab import drive", "%cd /content/drive"),
        ("drive.mount('/content/gdrive')", "%cd /content/drive"),
        ("import json", ":dep name"),
        ("json.dump(token, file)", "%kaggle login"),
        ("os.environ['KAGGLE_KEY'] = 'abc'", "%env NAME=value"),
        ("torch.save(model.state_dict(), 'model.pt')", "%checkpoint save"),
        ("files.upload()", "upload button"),
    ]:
        error = kernel.execute(line).error()
        assert error is not None, line
        text = "\n".join(error["traceback"])
        assert "Rust kernel" in text and answer in text, (line, text)
