"""The real CLI, with and without a server running on the same embedded store."""

from __future__ import annotations

import contextlib
import functools
import gc
import gzip
import re
import stat
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from parley.child_process import stop
from parley.cli import app
from parley.demo import SCALES, generate
from parley.settings import Settings
from tests.conftest import STORE_KINDS, bearer, store_url_for
from tests.factories import T0, WS, call, event, iso, member
from tests.processes import cli_env, free_port, new_key, run_cli, running_server
from tests.test_org_analytics import observation, session, trace

pytestmark = pytest.mark.slow


def _jsonl(path: Path, lines: list) -> Path:
    path.write_bytes(b"".join((line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n" for line in lines))
    return path


def _key(result) -> str:
    return result.stdout.strip().splitlines()[-1]


def _printed_curls(stdout: str) -> list[tuple[str, str, list[str]]]:
    """(line, key, words) of each curl the demo printed, continued lines joined."""
    curls = []
    for line in stdout.replace("\\\n", " ").splitlines():
        words = line.split()
        if words[:2] == ["curl", "-s"]:
            curls.append((line, line.split("Bearer ", 1)[1].split('"', 1)[0], words))
    return curls


def _printed_reads(stdout: str) -> list[tuple[str, str]]:
    """(key, URL) of each GET the demo printed as a curl."""
    return [
        (key, next(w.strip('"') for w in words if w.strip('"').startswith("http")))
        for _, key, words in _printed_curls(stdout)
        if "-X" not in words
    ]


def _printed_post(stdout: str) -> tuple[str, str, bytes]:
    """(key, URL, body) of the one POST the demo printed as a curl."""
    ((line, key, words),) = (curl for curl in _printed_curls(stdout) if "-X" in curl[2])
    body = line.split(" -d '", 1)[1].split("'", 1)[0]
    return key, words[-1], body.encode()


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_keys_and_ingest_go_through_a_running_server_and_show_at_once(tmp_path: Path, kind: str):
    url = store_url_for(kind, tmp_path)
    events = _jsonl(
        tmp_path / "events.jsonl",
        [
            {"org": "acme", **member(1, "admin", id="m1")},
            {"org": "acme", **call("c1", "a1", T0, name="Bot", duration=90, id="c1")},
            b"{broken json",
            {"org": "acme", **call("c2", "a1", T0, id="c2")},
            {"org": "globex", **call("c3", "a1", T0, duration=30, id="c3")},
            {"id": "no-org", "type": "call.create", "timestamp": "2024-05-01T10:00:00Z", "body": {}},
            b'[{"org": "acme"}]',
        ],
    )
    with running_server(url) as (base, _):
        made = run_cli(url, "keys", "create", "--org", "acme", "--workspace", WS, "--member", "1")
        assert made.stdout.startswith(f"Created a key for member 1 of workspace {WS} in org acme. Store it now")
        member_key = _key(made)
        made = run_cli(url, "keys", "create", "--org", "acme", "--ingest")
        assert made.stdout.startswith("Created an ingestion key in org acme. Store it now")
        ingest_key = _key(made)
        result = run_cli(url, "ingest", str(events), check=False)
        assert result.returncode == 2  # some lines were rejected
        assert "accepted 4, duplicates 0, rejected 3" in result.stdout
        assert "line 3: not JSON: unexpected character, expected a string key at column 2" in result.stderr
        assert "line 6: no org" in result.stderr
        assert "line 7: an event must be a JSON object" in result.stderr

        headers = bearer(member_key)
        response = httpx.get(
            f"{base}/analytics/calls/by-assistant",
            params={"start_date": "2024-05-01", "end_date": "2024-05-01"},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        assert [(a["total_calls"], a["total_duration_minutes"]) for a in response.json()["data"]["assistants"]] == [
            (2, 1.5)
        ]
        ingest = httpx.post(f"{base}/api/v2/ingest", json={"batch": []}, headers=bearer(ingest_key))
        assert ingest.status_code == 207

        again = run_cli(url, "ingest", str(events), "--org", "acme", check=False)
        # With --org, the globex line is refused rather than moved into acme.
        assert "accepted 0, duplicates 3, rejected 4" in again.stdout
        assert "line 5: event is for org 'globex', not --org 'acme'" in again.stderr
        assert "line 7: an event must be a JSON object" in again.stderr


def test_a_server_logs_its_start_and_end_once_and_the_channels_requests(tmp_path: Path):
    # The operator channel is a second uvicorn server in the process: its own start and
    # end lines were printed beside the public server's.
    url, log = store_url_for("duckdb", tmp_path), tmp_path / "server.log"
    with running_server(url, output=log) as (_, process):
        run_cli(url, "keys", "create", "--org", "acme", "--ingest")
        stop(process, within=20)
    output = log.read_text()
    assert output.count("Started server process") == 1 and output.count("Finished server process") == 1, output
    assert output.count("Uvicorn running on http://127.0.0.1:") == 1
    assert '"POST /keys HTTP/1.1" 200' in output  # the channel's requests are logged still


@pytest.mark.parametrize("level", ["DEBUG", "warning"])
def test_a_server_prints_its_own_lines_at_its_log_level(tmp_path: Path, level: str):
    # Parley's loggers had no handler: Python printed their warnings bare (no level, no
    # logger's name) and dropped their other lines, whatever PARLEY_LOG_LEVEL said.
    url, log = store_url_for("duckdb", tmp_path), tmp_path / "server.log"
    with running_server(url, output=log, settings={"PARLEY_LOG_LEVEL": level}) as (base, process):
        admin = bearer(new_key(url, "--org", "acme", "--workspace", WS, "--member", "1"))
        sent = httpx.post(
            f"{base}/api/v2/ingest",
            json={
                "batch": [
                    member(1, "admin"),
                    trace("t1", T0, user_id="alice"),
                    observation("o1", "t1", T0, model="my-own-model", tokens_in=1000),
                ]
            },
            headers=bearer(new_key(url, "--org", "acme", "--ingest")),
        )
        assert sent.status_code == 207 and sent.json()["errors"] == [], sent.text
        cost = httpx.get(
            f"{base}/api/ai-analytics/orgs/acme/users/alice/user-cost/",
            params={"start_date": "2024-05-01", "end_date": "2024-05-01"},
            headers=admin,
        )
        assert cost.json() == {"total_cost": 0.0}, cost.text
        stop(process, within=20)
    lines = log.read_text().splitlines()
    assert (
        "WARNING:  parley.cost: user-cost: tokens of alice in org acme with no cost and no known model price were "
        "counted as 0: 'my-own-model' 1,000 input and 0 output tokens (1 observation without a cost)"
    ) in lines
    # The store's closing checkpoint of a small log is a DEBUG line of Parley's; uvicorn's
    # lines of requests are INFO.
    closing = [line for line in lines if line.startswith("DEBUG:    parley.store: closing: ")]
    assert len(closing) == (level == "DEBUG"), lines
    assert any('"GET /api/ai-analytics/orgs/acme/users/alice/user-cost/' in line for line in lines) == (
        level == "DEBUG"
    )


def test_a_server_checkpoints_at_the_configured_log_size_and_says_so(tmp_path: Path):
    # PARLEY_DUCKDB_CHECKPOINT_MB=1: 8,000 calls write about 1.7 MB of log, so at least one
    # checkpoint, each logged at INFO once the log held a megabyte.
    url, log = store_url_for("duckdb", tmp_path), tmp_path / "server.log"
    with running_server(url, output=log, settings={"PARLEY_DUCKDB_CHECKPOINT_MB": "1"}) as (base, process):
        ingest = bearer(new_key(url, "--org", "acme", "--ingest"))
        for first in range(0, 8_000, 1_000):
            batch = [call(f"c{n}", "a1", T0) for n in range(first, first + 1_000)]
            assert httpx.post(f"{base}/api/v2/ingest", json={"batch": batch}, headers=ingest).status_code == 207
        stop(process, within=20)
    checkpoints = re.findall(
        r"^INFO:     parley\.store: checkpoint: ([0-9.]+) MB of write-ahead log written into the store in [0-9.]+ s$",
        log.read_text(),
        re.MULTILINE,
    )
    assert checkpoints and all(float(mb) >= 1.0 for mb in checkpoints), log.read_text()
    with running_server(url, output=log) as (_, process):  # 256 MB by default: none
        stop(process, within=20)
    assert "parley.store: checkpoint:" not in log.read_text()


def test_a_log_level_the_server_does_not_know_is_refused_with_the_levels_it_does(tmp_path: Path):
    # It ended `parley serve` with uvicorn's traceback: KeyError: 'verbose'.
    result = subprocess.run(
        [sys.executable, "-m", "parley", "serve", "--port", str(free_port())],
        env=cli_env(store_url_for("duckdb", tmp_path), {"PARLEY_LOG_LEVEL": "verbose"}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert (
        "error: PARLEY_LOG_LEVEL='verbose': Input should be 'critical', 'error', 'warning', 'info' or 'debug'"
        in result.stderr
    )


@pytest.mark.parametrize("level", [None, "WARNING"])
def test_a_bulk_load_prints_the_store_s_own_lines_at_the_log_level(tmp_path: Path, level: str | None):
    # `parley ingest` had no handler for Parley's lines: Python dropped the INFO ones and
    # would print warnings and errors bare (no level, no logger's name). 8,000 calls write
    # about 1.2 MB of log, which the store writes into itself as it closes: an INFO line
    # from a megabyte on.
    url = store_url_for("duckdb", tmp_path)
    calls = _jsonl(tmp_path / "calls.jsonl", [call(f"c{n}", "a1", T0, duration=60, id=f"c{n}") for n in range(8_000)])
    settings = {"PARLEY_LOG_LEVEL": level} if level else None
    loaded = run_cli(url, "ingest", str(calls), "--org", "acme", settings=settings)
    assert loaded.stdout == "accepted 8000, duplicates 0, rejected 0\n"
    closing = re.findall(
        r"^INFO:     parley\.store: closing: ([0-9.]+) MB of write-ahead log written into the store in [0-9.]+ s$",
        loaded.stderr,
        re.MULTILINE,
    )
    if level is None:  # info, the default
        assert len(closing) == 1 and 1.0 <= float(closing[0]) < 5.0, loaded.stderr
    else:
        assert "parley." not in loaded.stderr, loaded.stderr


def test_a_bulk_load_says_how_many_rows_it_put_in_their_order_as_it_ended(tmp_path: Path):
    # The pause between a load's last line and its end said nothing: the store rewrites
    # each org's rows of its time-ordered tables, here the sessions and the users'
    # activity (a row of each a session), then writes its log into itself.
    url = store_url_for("duckdb", tmp_path)
    hours = [(n * 7919) % 3_000 for n in range(3_000)]  # a shuffled order of 3,000 hours
    lines = [session(f"s{n}", f"u{n % 7}", T0 + timedelta(hours=hour)) for n, hour in enumerate(hours)]
    sessions = _jsonl(tmp_path / "sessions.jsonl", lines)
    loaded = run_cli(url, "ingest", str(sessions), "--org", "acme")
    assert loaded.stdout == "accepted 3000, duplicates 0, rejected 0\n"
    reorders = re.findall(
        r"^INFO:     parley\.store: reorder: ([0-9]+) rows of (.+) rewritten in their order in [0-9.]+ s$",
        loaded.stderr,
        re.MULTILINE,
    )
    assert reorders == [("6000", "sessions, user_activity")], loaded.stderr
    again = run_cli(url, "ingest", str(sessions), "--org", "acme")  # nothing new to put in order
    assert again.stdout == "accepted 0, duplicates 3000, rejected 0\n"
    assert "reorder:" not in again.stderr, again.stderr


def test_a_test_server_answers_past_what_a_pipe_holds_of_its_log(tmp_path: Path):
    # `running_server` gave the server's output to a pipe no one read: past about 1,100
    # requests their access lines filled it, and the server waited on it, answering none.
    log = tmp_path / "server.log"
    with running_server(store_url_for("duckdb", tmp_path), output=log) as (base, _), httpx.Client(timeout=5) as client:
        statuses = [client.get(f"{base}/healthz").status_code for _ in range(3000)]
    assert statuses == [200] * 3000
    assert log.read_text().count('"GET /healthz HTTP/1.1" 200') >= 3000


def test_a_store_deep_in_directories_is_reached_through_its_running_server(tmp_path: Path):
    # The channel's socket, next to the database file, has a path longer than a Unix
    # socket's address may be (107 bytes): `parley serve` failed with a traceback.
    deep = tmp_path.joinpath(*["d" * 40] * 3)
    url, socket_path = f"duckdb:///{deep}/parley.duckdb", deep / "parley.duckdb.admin.sock"
    assert len(str(socket_path)) > 107
    with running_server(url) as (base, _):
        assert socket_path.is_socket() and stat.S_IMODE(socket_path.stat().st_mode) == 0o600
        # The server holds the DuckDB file: the key can only have been made through it.
        key = new_key(url, "--org", "acme", "--ingest")
        ingest = httpx.post(f"{base}/api/v2/ingest", json={"batch": []}, headers=bearer(key))
        assert ingest.status_code == 207
        assert key.split("_")[1] in run_cli(url, "keys", "list").stdout
    assert not socket_path.exists()


def test_a_channel_socket_no_address_can_reach_stops_the_server_with_the_reason(tmp_path: Path):
    # Even through its directory's descriptor (/proc/self/fd/N/name), a socket whose own
    # name is this long has no address that fits.
    database = tmp_path / f"{'x' * 100}.duckdb"
    result = run_cli(f"duckdb:///{database}", "serve", "--port", str(free_port()), check=False, timeout=60)
    assert (result.returncode, result.stderr) == (
        1,
        "error: the operator channel's socket path is longer than a Unix socket's address may be (107 bytes): "
        f"{database}.admin.sock; set PARLEY_ADMIN_SOCKET to a shorter path\n",
    )


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_keys_are_listed_and_revoked_through_a_running_server_and_without_one(tmp_path: Path, kind: str):
    url = store_url_for(kind, tmp_path)
    loaded = run_cli(url, "ingest", str(_jsonl(tmp_path / "e.jsonl", [member(1, "admin")])), "--org", "acme")
    assert "accepted 1" in loaded.stdout
    ingest_key = new_key(url, "--org", "globex", "--ingest")
    with running_server(url) as (base, _):
        key = new_key(url, "--org", "acme", "--workspace", WS, "--member", "1")
        read = functools.partial(httpx.get, f"{base}/analytics/calls/by-assistant", headers={"X-API-Key": key})
        assert read().status_code == 200
        key_id, ingest_id = key.split("_")[1], ingest_key.split("_")[1]
        listed = run_cli(url, "keys", "list").stdout.splitlines()
        assert [line.split() for line in listed] == [
            ["KEY", "ID", "ORG", "WORKSPACE", "MEMBER", "CREATED", "REVOKED"],
            [ingest_id, "globex", "-", "ingest", listed[1].split()[4], "-"],
            [key_id, "acme", WS, "1", listed[2].split()[4], "-"],
        ]
        assert key.split("_", 2)[2] not in "".join(listed)  # never a secret (which may hold "_")
        revoked = run_cli(url, "keys", "revoke", key).stdout
        assert revoked.startswith(f"Revoked key {key_id} (member 1 of workspace {WS} in org acme) at ")
        refused = read()
        assert (refused.status_code, refused.json()["message"]) == (401, "this API key has been revoked")
        unknown = run_cli(url, "keys", "revoke", "0123456789abcdef", check=False)
        assert (unknown.returncode, unknown.stderr.strip()) == (1, "error: no key has id '0123456789abcdef'")
    # Without a server: the store itself.
    again = run_cli(url, "keys", "revoke", key_id).stdout
    at = revoked.strip().rsplit(" at ", 1)[1]
    assert again == f"Key {key_id} (member 1 of workspace {WS} in org acme) was already revoked at {at}\n"
    run_cli(url, "keys", "revoke", ingest_key)
    listed = run_cli(url, "keys", "list", "--org", "acme").stdout.splitlines()
    assert listed[1].split()[0] == key_id and listed[1].split()[-1] == at.rstrip(".") and len(listed) == 2
    with running_server(url) as (base, _):
        batch = {"batch": [member(2, "admin")]}
        refused = httpx.post(f"{base}/api/v2/ingest", json=batch, headers={"X-API-Key": ingest_key})
        assert (refused.status_code, refused.json()) == (401, {"detail": "this API key has been revoked"})


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_the_cli_opens_the_store_itself_when_no_server_runs(tmp_path: Path, kind: str):
    url = store_url_for(kind, tmp_path)
    events = _jsonl(
        tmp_path / "e.jsonl", [member(1, "controller", id="m1"), call("c1", "a1", T0, duration=60, id="c1")]
    )
    loaded = run_cli(url, "ingest", str(events), "--org", "acme")
    assert "accepted 2, duplicates 0, rejected 0" in loaded.stdout
    key = new_key(url, "--org", "acme", "--workspace", WS, "--member", "1")
    assert key.startswith("prl_")
    with running_server(url) as (base, _):
        response = httpx.get(
            f"{base}/analytics/calls/by-assistant",
            params={"start_date": "2024-05-01", "end_date": "2024-05-01"},
            headers={"X-API-Key": key},
        )
        assert response.json()["data"]["assistants"][0]["total_calls"] == 1


def _calls_minutes(url: str, key: str) -> dict[str, tuple[int, float]]:
    with running_server(url) as (base, _):
        response = httpx.get(
            f"{base}/analytics/calls/by-assistant",
            params={"start_date": "2024-05-01", "end_date": "2024-05-31"},
            headers={"X-API-Key": key},
        )
    return {
        a["assistant_id"]: (a["total_calls"], a["total_duration_minutes"])
        for a in response.json()["data"]["assistants"]
    }


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_a_gzip_file_with_a_byte_order_mark_and_crlf_lines_loads_whole(tmp_path: Path, kind: str):
    url = store_url_for(kind, tmp_path)
    calls = [call(f"c{i}", f"a{i % 3}", T0 + timedelta(minutes=i), duration=6 * i) for i in range(1, 25_001)]
    lines = [member(1, "controller"), *calls]
    text = b"\xef\xbb\xbf" + b"".join(orjson.dumps(line) + b"\r\n" for line in lines)
    (tmp_path / "e.jsonl.gz").write_bytes(gzip.compress(text))
    loaded = run_cli(url, "ingest", str(tmp_path / "e.jsonl.gz"), "--org", "acme")
    assert "accepted 25001, duplicates 0, rejected 0" in loaded.stdout
    key = new_key(url, "--org", "acme", "--workspace", WS, "--member", "1")
    # Call i lasts 6i seconds, a tenth of i minutes: assistant a_r has the i = r (mod 3).
    expected = {
        f"a{r}": (len(range(r or 3, 25_001, 3)), round(sum(range(r or 3, 25_001, 3)) / 10, 2)) for r in range(3)
    }
    assert _calls_minutes(url, key) == expected


def test_standard_input_loads_plain_or_gzip_and_a_missing_file_is_named(tmp_path: Path):
    url = store_url_for("duckdb", tmp_path)
    plain = [member(1, "controller"), *(call(f"p{i}", "a1", T0, duration=60) for i in range(300))]
    packed = [call(f"g{i}", "a1", T0, duration=120) for i in range(200)]

    def piped(content: bytes) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "parley", "ingest", "-", "--org", "acme"]
        return subprocess.run(command, input=content, env=cli_env(url), capture_output=True, timeout=300)

    first = piped(b"\xef\xbb\xbf" + b"".join(orjson.dumps(line) + b"\n" for line in plain))
    assert b"accepted 301, duplicates 0, rejected 0" in first.stdout, first.stderr
    second = piped(gzip.compress(b"".join(orjson.dumps(line) + b"\n" for line in packed)))
    assert b"accepted 200, duplicates 0, rejected 0" in second.stdout, second.stderr
    key = new_key(url, "--org", "acme", "--workspace", WS, "--member", "1")
    assert _calls_minutes(url, key) == {"a1": (500, 300 + 400)}
    for path, reason in (("nope.jsonl", "does not exist"), (".", "is a directory")):
        refused = run_cli(url, "ingest", path, cwd=tmp_path, check=False)
        assert refused.returncode == 2 and f"file '{path}' {reason}." in " ".join(refused.stderr.split())


def test_a_gzip_file_cut_short_loads_what_came_before_and_fails(tmp_path: Path):
    url = store_url_for("duckdb", tmp_path)
    lines = [orjson.dumps(call(f"c{i}", "a1", T0, duration=60, id=f"e{i}")) + b"\n" for i in range(40_000)]
    whole = gzip.compress(b"".join(lines))
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    cut = run_cli(url, "ingest", str(tmp_path / "cut.jsonl.gz"), "--org", "acme", check=False)
    assert cut.returncode == 1
    assert cut.stderr.strip().endswith(
        "cut.jsonl.gz could not be read to its end (Compressed file ended before the end-of-stream marker was "
        "reached); the lines before it were loaded, as reported"
    )
    accepted = int(cut.stdout.split("accepted ")[1].split(",")[0])
    assert 0 < accepted < 40_000 and ", rejected 0" in cut.stdout
    # What was loaded is the file's first lines: loading the whole file adds the rest.
    (tmp_path / "whole.jsonl.gz").write_bytes(whole)
    again = run_cli(url, "ingest", str(tmp_path / "whole.jsonl.gz"), "--org", "acme")
    assert f"accepted {40_000 - accepted}, duplicates {accepted}, rejected 0" in again.stdout


@pytest.mark.parametrize("through_server", [False, True])
def test_a_bulk_load_leaves_user_activity_in_time_order(tmp_path: Path, through_server: bool):
    import duckdb

    url = f"duckdb:///{tmp_path}/parley.duckdb"
    hours = [5, 1, 7, 3, 2, 6, 4]
    sessions = [
        event("session.create", {"session_id": f"s{h}", "user_id": "u1", "started_at": iso(T0 + timedelta(hours=h))})
        for h in hours
    ]
    events = _jsonl(tmp_path / "e.jsonl", sessions)
    with running_server(url) if through_server else contextlib.nullcontext():
        assert "accepted 7" in run_cli(url, "ingest", str(events), "--org", "acme").stdout
    with duckdb.connect(str(tmp_path / "parley.duckdb"), read_only=True) as con:
        stored = con.execute("SELECT active_at FROM user_activity ORDER BY rowid").fetchall()
    assert [at for (at,) in stored] == [(T0 + timedelta(hours=h)).replace(tzinfo=None) for h in sorted(hours)]


def test_bad_key_requests_fail_clearly(tmp_path: Path):
    url = f"duckdb:///{tmp_path}/parley.duckdb"
    result = run_cli(url, "keys", "create", "--org", "acme", check=False)
    assert result.returncode == 1
    assert "member key needs both a workspace and a member" in result.stderr
    # A member id past 64 bits was a DuckDB traceback.
    result = run_cli(url, "keys", "create", "--org", "acme", "--workspace", "w", "--member", str(2**64), check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: member must be 0 to 9223372036854775807, as member events number them"


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("not-a-store", "IO Error: "),  # then DuckDB's words: not a valid database file
        ("not-a-store/[/b]/parley.duckdb", "[Errno 20] Not a directory: '{dir}/not-a-store/[/b]'\n"),
    ],
)
def test_a_store_that_cannot_be_opened_is_named_on_one_line(tmp_path: Path, path: str, reason: str):
    # The brackets of "[/b]" were read as rich markup, which failed with a traceback.
    (tmp_path / "not-a-store").write_text("a plain file\n")
    for args in (["keys", "create", "--org", "acme", "--ingest"], ["demo"]):
        result = run_cli(f"duckdb://{tmp_path}/{path}", *args, check=False)
        assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
        expected = f"error: {tmp_path}/{path} could not be opened: {reason.format(dir=tmp_path)}"
        assert result.stderr.startswith(expected), result.stderr


def test_a_chdb_directory_that_is_a_file_is_named_on_one_line(tmp_path: Path):
    (tmp_path / "not-a-store").write_text("a plain file\n")
    result = run_cli(f"chdb://{tmp_path}/not-a-store", "keys", "create", "--org", "acme", "--ingest", check=False)
    expected = f"{tmp_path}/not-a-store could not be made a chdb data directory: [Errno 17] File exists: "
    assert (result.returncode, result.stderr) == (1, f"error: {expected}'{tmp_path}/not-a-store'\n")


def test_a_clickhouse_server_out_of_reach_is_named_not_a_traceback():
    # Nothing listens on port 1.
    result = run_cli("clickhouse://127.0.0.1:1/db", "keys", "create", "--org", "acme", "--ingest", check=False)
    assert result.returncode == 1
    assert "error: ClickHouse at 127.0.0.1:1 could not be reached: " in result.stderr
    assert "Connection refused" in result.stderr and "Traceback" not in result.stderr


def test_every_command_collects_young_objects_every_20000_not_700(tmp_path: Path):
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # the interpreter's defaults
    try:
        result = CliRunner().invoke(
            app,
            ["keys", "create", "--org", "acme", "--ingest"],
            env={"PARLEY_DATABASE_URL": f"duckdb:///{tmp_path}/parley.duckdb"},
        )
        assert result.exit_code == 0, result.output
        assert gc.get_threshold() == (20_000, 10, 10)
    finally:
        gc.set_threshold(*before)


def _in_a_fresh_interpreter(script: str, *args: str, store: str, check: bool = False) -> subprocess.CompletedProcess:
    """``script`` (one of the real CLI's below) run with ``args`` on ``store`` by a new Python."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        env=cli_env(store),
        capture_output=True,
        text=True,
        timeout=120,
        check=check,
    )


# The real CLI in a fresh interpreter, which says at its exit how many new objects its
# cycle collector lets come between two looks at the young ones.
_YOUNG_THRESHOLD_AT_EXIT = """
import atexit, gc, sys
atexit.register(lambda: print(gc.get_threshold()[0], file=sys.stderr))
from parley.cli import app
app(prog_name="parley")
"""


def test_the_server_collects_young_objects_every_200000_other_commands_every_20000(tmp_path: Path):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")

    def threshold(*args: str, store: str) -> int:
        return int(_in_a_fresh_interpreter(_YOUNG_THRESHOLD_AT_EXIT, *args, store=store).stderr.splitlines()[-1])

    assert threshold("keys", "list", store=store_url_for("duckdb", tmp_path)) == 20_000
    # The server sets its own as it starts: here stopped by a store that cannot be opened.
    assert threshold("serve", store=f"duckdb:///{not_a_directory}/parley.duckdb") == 200_000


# The real CLI in a fresh interpreter, which says at its exit which web-server packages it
# had loaded.
_WEB_MODULES_AT_EXIT = """
import atexit, sys
atexit.register(lambda: print(sorted({m.split(".")[0] for m in sys.modules} & {"fastapi", "starlette", "uvicorn"}),
                              file=sys.stderr))
from parley.cli import app
app(prog_name="parley")
"""


def test_each_command_s_summary_has_no_line_break():
    """`parley --help` and `parley keys --help` list each command with its docstring's first
    paragraph, line breaks kept: `keys list`'s, written over two lines, was cut in two there."""
    groups = [app, *(group.typer_instance for group in app.registered_groups)]
    summaries = {
        command.callback.__name__: command.callback.__doc__.split("\n\n")[0]
        for group in groups
        for command in group.registered_commands
    }
    assert {"serve", "ingest", "demo", "bench", "keys_create", "keys_list", "keys_revoke"} <= summaries.keys()
    assert [name for name, summary in summaries.items() if "\n" in summary] == []


def test_commands_other_than_serve_start_without_the_web_framework(tmp_path: Path):
    # Importing FastAPI took about 0.45 of the 1.25 s every command took to start.
    url = store_url_for("duckdb", tmp_path)
    events = _jsonl(tmp_path / "e.jsonl", [call("c1", "a1", T0, duration=60, id="c1")])

    def parley(*args: str, store: str = url) -> tuple[subprocess.CompletedProcess, str]:
        done = _in_a_fresh_interpreter(_WEB_MODULES_AT_EXIT, *args, store=store, check=store == url)
        return done, done.stderr.splitlines()[-1]

    loaded, web = parley("ingest", str(events), "--org", "acme")
    assert "accepted 1, duplicates 0, rejected 0" in loaded.stdout and web == "[]"
    created, web = parley("keys", "create", "--org", "acme", "--ingest")
    assert web == "[]"
    listed, web = parley("keys", "list")
    key_id = _key(created).split("_")[1]  # prl_<id>_<secret>
    assert listed.stdout.splitlines()[1].split()[:2] == [key_id, "acme"] and web == "[]"
    # The probe sees them where they are loaded: `parley serve`, here stopped once loaded
    # by a store that cannot be opened.
    _, web = parley("serve", store=f"duckdb:///{events}/parley.duckdb")
    assert web == "['fastapi', 'starlette', 'uvicorn']"


def test_the_admin_socket_is_the_owner_s_alone(tmp_path: Path):
    url = f"duckdb:///{tmp_path}/parley.duckdb"
    with running_server(url):
        sock = tmp_path / "parley.duckdb.admin.sock"
        assert sock.is_socket()
        assert sock.stat().st_mode & 0o777 == 0o600
    assert not sock.exists()


def test_demo_loads_every_event_type_and_prints_working_keys(tmp_path: Path):
    url = f"duckdb:///{tmp_path}/parley.duckdb"
    result = run_cli(url, "demo", "--end", "2024-06-15T12:00:00Z")
    assert "rejected 0" in result.stdout
    lines = result.stdout.splitlines()
    admin_key = next(line.split()[-1] for line in lines if "admin member key" in line)
    basic_key = next(line.split()[-1] for line in lines if "basic member key" in line)
    with running_server(url) as (base, _):
        ok = httpx.get(f"{base}/analytics/calls/by-assistant", headers=bearer(admin_key))
        assert ok.status_code == 200
        # The demo's window ends 2024-06-15, so the default range (30 days to now) is empty;
        # a range inside the window has the seed's shape.
        data = httpx.get(
            f"{base}/analytics/calls/by-assistant",
            params={"start_date": "2024-05-16", "end_date": "2024-06-15"},
            headers=bearer(admin_key),
        ).json()
        assert data["success"] is True
        assistants = data["data"]["assistants"]
        assert len(assistants) >= 3
        assert all(a["total_calls"] > 0 for a in assistants)
        durations = [a["total_duration_minutes"] for a in assistants]
        assert durations == sorted(durations, reverse=True)
        denied = httpx.get(f"{base}/analytics/calls/by-assistant", headers=bearer(basic_key))
        assert denied.status_code == 403
        # Every read the demo printed answers, over the data's last 30 days where it names a range.
        printed_base = lines[-1].split()[-1].removesuffix("/docs")
        answers = []
        reads = _printed_reads(result.stdout)
        for key, printed in reads:
            got = httpx.get(printed.replace(printed_base, base), headers=bearer(key))
            assert got.status_code == (403 if key == basic_key else 200), printed
            answers.append((printed.split("?")[0].rstrip("/").rsplit("/", 1)[-1], got))
        # The printed event, sent as printed, is then counted by the read printed after it.
        key, printed, body = _printed_post(result.stdout)
        sent = httpx.post(
            printed.replace(printed_base, base),
            content=body,
            headers={**bearer(key), "Content-Type": "application/json"},
        )
        assert sent.status_code == 207 and sent.json() == {"successes": [{"id": "try-1", "status": 201}], "errors": []}
        key, printed = reads[-1]
        after = httpx.get(printed.replace(printed_base, base), headers=bearer(key))
    assert len(answers) == 12
    day = "2024-05-01"
    assert printed.endswith(f"/analytics/calls/by-assistant?start_date={day}&end_date={day}")
    before = {a["assistant_name"]: a for a in answers[-1][1].json()["data"]["assistants"]}
    counted = {a["assistant_name"]: a for a in after.json()["data"]["assistants"]}
    assert "Try Bot" not in before
    try_bot = counted.pop("Try Bot")
    assert (try_bot["total_calls"], try_bot["total_duration_minutes"], counted) == (1, 1.5, before)
    first, last = "2024-05-17", "2024-06-15"
    assert f"its last 30 days: FROM={first} TO={last}." in result.stdout
    got = dict(answers[2:])  # after the two calls by assistant
    # The feedback's count, against the generator's own events of the window.
    events = generate(SCALES["demo"], seed=7, end=datetime.fromisoformat("2024-06-15T12:00:00Z"))
    feedback = [e for e in events if e["type"] == "feedback.create" and e["org"] == "acme"]
    in_window = sum(first <= e["body"]["created_at"][:10] <= last for e in feedback)
    assert 0 < in_window < len(feedback)
    assert sum(p["feedback_count"] for p in got["user-feedback"].json()[0]) == in_window
    cohorts = got["user-cohorts-over-time"].json()
    assert sum(cohorts["new_users"]) > 0 and sum(cohorts["veteran_users"]) > 0
    assert got["user-cost"].json()["total_cost"] > 0
    usage = got["assistants_usage"].json()["data"]
    assert any(point["y"] > 0 for points in usage.values() for point in points)
    # Running the demo again changes nothing: every event id is already stored.
    again = run_cli(url, "demo", "--end", "2024-06-15T12:00:00Z")
    assert "accepted 0," in again.stdout


def test_demo_through_a_running_server_prints_that_servers_address(tmp_path: Path):
    url = f"duckdb:///{tmp_path}/parley.duckdb"
    with running_server(url) as (base, _):  # on a free port, not the default 8000
        result = run_cli(url, "demo", "--end", "2024-06-15T12:00:00Z")
        assert f"The server that took the data serves it now: open the dashboard at {base}/ and" in result.stdout
        reads = _printed_reads(result.stdout)
        assert len(reads) == 12 and [printed for _, printed in reads if not printed.startswith(f"{base}/")] == []
        for key, printed in reads:  # each as printed
            got = httpx.get(printed, headers=bearer(key))
            assert got.status_code in (200, 403), printed
    assert result.stdout.splitlines()[-1] == f"API documentation: {base}/docs"


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:9000"),
        ("0.0.0.0", "http://127.0.0.1:9000"),  # every interface: reached at the loopback one
        ("::", "http://[::1]:9000"),
        ("10.1.2.3", "http://10.1.2.3:9000"),
        ("fd00::5", "http://[fd00::5]:9000"),
        ("parley.internal", "http://parley.internal:9000"),
    ],
)
def test_the_api_url_a_local_client_reaches_the_server_at(host: str, url: str):
    assert Settings(host=host, port=9000).api_url == url
