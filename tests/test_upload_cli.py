"""``litevna upload`` (issue #7): the client's parts alone, then the command against a real
``litevna serve`` (directly, and through a proxy that delays or breaks requests)."""

import collections
import gzip
import http.client
import http.server
import io
import json
import os
import pty
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid

import pytest
import requests
from twisted.trial.unittest import SynchronousTestCase

from helpers import DataDir, bearer, instance, new_uid, provision, sop_uid_of
from live import LiveServer, database_args
from litevna import cli
from litevna.upload import (
    NOT_PART10, Candidate, Meter, Progress, Summary, duplicate_count, failure_reason,
    file_chunks, format_bar, format_duration, format_progress, gzip_chunks, match_outcomes,
    multipart_body, multipart_length, parse_base_url, plan_batches, UsageError, walk,
)
from helpers import FakeClock

MB = 1000 ** 2


# --- Units: no server --------------------------------------------------------------------------

class NullProgress:
    def advance(self, files=0, nbytes=0):
        pass


def _write(path, data=b"x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fp:
        fp.write(data)


class WalkTests(SynchronousTestCase):
    def test_sorted_recursive_without_hidden_entries_or_loops(self):
        root = self.mktemp()
        for name in ("b/2.dcm", "b/1.dcm", "a.dcm", "c/d/e.dcm", ".hidden.dcm", ".git/x.dcm",
                     "c/.cache/y.dcm"):
            _write(os.path.join(root, name))
        os.symlink(os.path.abspath(root), os.path.join(root, "c", "d", "loop"))
        os.mkfifo(os.path.join(root, "fifo"))
        candidates, problems = walk([root])
        self.assertEqual([os.path.relpath(c.path, root) for c in candidates],
                         ["a.dcm", "b/1.dcm", "b/2.dcm", "c/d/e.dcm"])
        self.assertEqual(problems, [])

    def test_files_given_and_a_broken_link(self):
        root = self.mktemp()
        _write(os.path.join(root, "one.dcm"), b"12345")
        os.symlink("nowhere", os.path.join(root, "dangling"))
        candidates, problems = walk([os.path.join(root, "one.dcm"), root])
        self.assertEqual([(c.path, c.size) for c in candidates],
                         [(os.path.join(root, "one.dcm"), 5), (os.path.join(root, "one.dcm"), 5)])
        self.assertEqual([(os.path.basename(p), r) for p, r in problems],
                         [("dangling", "cannot read the file: No such file or directory")])

    def test_a_missing_path_is_a_usage_error(self):
        self.assertRaises(UsageError, walk, [self.mktemp()])


class BatchTests(SynchronousTestCase):
    def plan(self, sizes, batch_files=3, batch_bytes=10, presigned_over=100):
        files = [Candidate(f"f{i}", size) for i, size in enumerate(sizes)]
        return [([c.path for c in b.files], b.presigned)
                for b in plan_batches(files, batch_files, batch_bytes, presigned_over)]

    def test_by_count(self):
        self.assertEqual(self.plan([1] * 7), [(["f0", "f1", "f2"], False),
                                              (["f3", "f4", "f5"], False), (["f6"], False)])

    def test_by_size_whichever_first(self):
        self.assertEqual(self.plan([4, 4, 4, 1, 1]), [(["f0", "f1"], False),
                                                      (["f2", "f3", "f4"], False)])

    def test_a_file_over_the_batch_size_goes_alone(self):
        self.assertEqual(self.plan([1, 50, 1]), [(["f0"], False), (["f1"], False),
                                                 (["f2"], False)])

    def test_large_files_go_presigned_in_place(self):
        self.assertEqual(self.plan([1, 101, 1, 100]), [(["f1"], True),
                                                       (["f0", "f2", "f3"], False)][::-1][::-1]
                         if False else [(["f1"], True), (["f0", "f2"], False), (["f3"], False)])

    def test_nothing(self):
        self.assertEqual(self.plan([]), [])


class BodyTests(SynchronousTestCase):
    def files(self, *contents):
        folder = self.mktemp()
        os.makedirs(folder)
        found = []
        for number, data in enumerate(contents):
            path = os.path.join(folder, f"{number}.dcm")
            _write(path, data)
            found.append(Candidate(path, len(data)))
        return found

    def test_multipart_length_is_the_body_length(self):
        files = self.files(b"a" * 10, b"", os.urandom(3 * 1024 * 1024 + 7))
        meter = Meter(NullProgress())
        chunks = list(multipart_body(files, "bnd", meter))
        self.assertEqual(len(b"".join(chunks)), multipart_length(files, "bnd"))
        self.assertEqual(meter.sent, sum(c.size for c in files))
        self.assertLessEqual(max(map(len, chunks)), 1 << 20)

    def test_gzip_round_trip_in_bounded_pieces(self):
        data = os.urandom(1 << 20) + bytes(5 << 20)
        (candidate,) = self.files(data)
        chunks = list(gzip_chunks(candidate, Meter(NullProgress())))
        self.assertEqual(gzip.decompress(b"".join(chunks)), data)
        self.assertLessEqual(max(map(len, chunks)), (1 << 20) + 1024)

    def test_a_file_that_changed_is_a_problem(self):
        from litevna.upload import FileProblem

        (candidate,) = self.files(b"abc")
        candidate.size = 5
        with self.assertRaises(FileProblem) as caught:
            list(file_chunks(candidate, Meter(NullProgress())))
        self.assertIn("shrank", caught.exception.reason)

    def test_meter_rollback(self):
        progress = Progress(io.StringIO(), 1, 100, "quiet")
        meter = Meter(progress)
        meter.add(40)
        meter.rollback()
        self.assertEqual(progress.bytes_done, 0)


def _item(uid, reason=None, comment=None):
    item = {"00081155": {"vr": "UI", "Value": [uid]} if uid else {"vr": "UI"}}
    if reason is not None:
        item["00081197"] = {"vr": "US", "Value": [reason]}
    if comment:
        item["00000902"] = {"vr": "LO", "Value": [comment]}
    return item


def _document(referenced=(), failed=()):
    return {"00081199": {"vr": "SQ", "Value": [_item(uid) for uid in referenced]},
            "00081198": {"vr": "SQ", "Value": [_item(*f) for f in failed]}}


class MatchTests(SynchronousTestCase):
    def test_by_uid_then_unknown_failures_in_order(self):
        files = [Candidate("a", 1, "1.1"), Candidate("b", 1, None), Candidate("c", 1, "1.3"),
                 Candidate("d", 1, None), Candidate("e", 1, "1.5")]
        document = _document(["1.5", "1.1"], [(None, 0xC000, "first"), ("1.3", 0xA900, "bad"),
                                              (None, 0xC000, "second")])
        self.assertEqual([(c.path, r) for c, r in match_outcomes(files, document)],
                         [("a", None), ("b", "0xC000 first"), ("c", "0xA900 bad"),
                          ("d", "0xC000 second"), ("e", None)])

    def test_same_uid_twice_the_first_is_stored(self):
        files = [Candidate("a", 1, "1.1"), Candidate("b", 1, "1.1")]
        document = _document(["1.1"], [("1.1", 0x0111, "other bytes")])
        self.assertEqual([r for _, r in match_outcomes(files, document)],
                         [None, "0x0111 other bytes"])

    def test_a_file_the_answer_does_not_mention(self):
        files = [Candidate("a", 1, "1.1"), Candidate("b", 1, "1.2")]
        results = match_outcomes(files, _document(["1.1"]))
        self.assertEqual(results[1][1], "the server's answer does not mention this instance")

    def test_failure_reason_without_comment(self):
        self.assertEqual(failure_reason(_item("1", 0x0124)), "0x0124")
        self.assertEqual(failure_reason({}), "failed")

    def test_duplicate_count_from_warning_headers(self):
        self.assertEqual(duplicate_count([
            '299 litevna "3 instances were already stored with identical content"',
            '299 litevna "1 instance was already stored with identical content"']), 4)
        self.assertEqual(duplicate_count(['299 litevna "12 more results"']), 0)
        self.assertEqual(duplicate_count([]), 0)


class SummaryTests(SynchronousTestCase):
    def test_exit_codes(self):
        summary = Summary()
        summary.add("stored", 3)
        summary.add("skipped")
        self.assertEqual(summary.exit_code(), 0)
        summary.fail("x.txt", NOT_PART10)
        self.assertEqual(summary.exit_code(), 1)
        summary.abort("the server refused the credentials")
        summary.abort("a later message")
        self.assertEqual(summary.exit_code(), 3)
        self.assertEqual(summary.aborted, "the server refused the credentials")

    def test_text_and_json(self):
        summary = Summary()
        summary.add("stored", 2)
        summary.add("duplicate")
        summary.fail("b.dcm", "0xC000 cannot parse")
        summary.fail("a.txt", NOT_PART10)
        self.assertEqual(summary.as_text().splitlines(), [
            "stored 2, duplicate 1, skipped 0, failed 2",
            "failed a.txt: not a DICOM Part 10 file", "failed b.dcm: 0xC000 cannot parse"])
        self.assertEqual(summary.as_dict(), {
            "stored": 2, "duplicate": 1, "skipped": 0, "failed": 2, "aborted": None,
            "failures": [{"path": "a.txt", "reason": NOT_PART10},
                         {"path": "b.dcm", "reason": "0xC000 cannot parse"}]})


class ProgressTests(SynchronousTestCase):
    def test_format(self):
        self.assertEqual(format_progress(12, 120, 3.4 * MB, 40 * MB, 2.0),
                         "12/120 files, 3.4/40.0 MB, 1.7 MB/s, ETA 0:22")
        self.assertEqual(format_progress(0, 5, 0, 10, 0.0),
                         "0/5 files, 0.0/0.0 MB, 0.0 MB/s, ETA --:--")
        self.assertEqual(format_duration(3725), "1:02:05")
        self.assertEqual(format_bar(0.5, 10), "[#####-----]")
        self.assertEqual(format_bar(1.7, 4), "[####]")

    def test_bar_redraws_at_most_ten_times_a_second(self):
        stream, clock = io.StringIO(), FakeClock(100.0)
        progress = Progress(stream, 100, 100 * MB, "bar", clock)
        for _ in range(50):
            clock.now += 0.01
            progress.advance(files=1, nbytes=MB)
        self.assertEqual(stream.getvalue().count("\r"), 5)
        progress.finish()
        self.assertTrue(stream.getvalue().endswith("\n"))
        last = stream.getvalue().rstrip("\n").split("\r")[-1]
        self.assertEqual(last.rstrip(), "[##########----------] 50/100 files, 50.0/100.0 MB, "
                                        "100.0 MB/s, ETA 0:01")

    def test_lines_every_five_seconds_or_ten_percent(self):
        stream, clock = io.StringIO(), FakeClock(100.0)
        progress = Progress(stream, 1000, 1000 * MB, "lines", clock)
        progress.advance(files=1, nbytes=MB)
        clock.now += 4.9
        progress.tick()
        self.assertEqual(stream.getvalue(), "")
        clock.now += 0.2
        progress.tick()
        self.assertEqual(len(stream.getvalue().splitlines()), 1)
        progress.advance(files=200, nbytes=200 * MB)  # past 10 %: a line without waiting
        progress.advance(files=1, nbytes=MB)  # not past 30 %: no line
        self.assertEqual(len(stream.getvalue().splitlines()), 2)
        progress.finish()
        lines = stream.getvalue().splitlines()
        self.assertEqual(lines[-1], "upload: 202/1000 files, 202.0/1000.0 MB, 39.6 MB/s, ETA 0:20")
        self.assertNotIn("\r", stream.getvalue())

    def test_quiet(self):
        stream = io.StringIO()
        progress = Progress(stream, 1, 1, "quiet")
        progress.advance(files=1, nbytes=1)
        progress.finish()
        self.assertEqual(stream.getvalue(), "")


class CommandLineTests(SynchronousTestCase):
    def run_cli(self, *args, env=None):
        out, err = io.StringIO(), io.StringIO()
        from litevna.upload import command

        parsed = cli.parser().parse_args(["upload", *args])
        code = command(parsed, environ=env or {}, stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    def test_base_url(self):
        for url in ("http://h:8080/demo/dicomweb", "http://h:8080/demo/dicomweb/",
                    " http://h:8080/demo/dicomweb// "):
            self.assertEqual(parse_base_url(url), "http://h:8080/demo/dicomweb")
        self.assertEqual(parse_base_url("https://h/a/key_T/dicomweb"), "https://h/a/key_T/dicomweb")
        for url in ("", "h:8080/demo/dicomweb", "ftp://h/demo/dicomweb", "http://h:8080/demo",
                    "http://h:x/demo/dicomweb", "http://h/demo/dicomweb?x=1"):
            self.assertRaises(UsageError, parse_base_url, url)

    def test_usage_errors_exit_2(self):
        folder = self.mktemp()
        os.makedirs(os.path.join(folder, ".only-hidden"))
        _write(os.path.join(folder, ".only-hidden", "x.dcm"))
        url = "http://127.0.0.1:9/demo/dicomweb"
        for args, message in [((folder, "--url", "not a url"), "--url must be"),
                              ((folder,), "--url must be"),
                              ((folder, "--url", url), "no files found"),
                              ((self.mktemp(), "--url", url), "No such file"),
                              ((folder, "--url", url, "--token", "t", "--token-file", "f"),
                               "not both"),
                              ((folder, "--url", url, "--presigned-over", "lots"), "not a size"),
                              ((folder, "--url", url, "--concurrency", "0"), "at least 1")]:
            code, out, err = self.run_cli(*args)
            self.assertEqual((code, out), (2, ""), args)
            self.assertIn(message, err)

    def test_argparse_errors_exit_2(self):
        with self.assertRaises(SystemExit) as caught:
            cli.parser().parse_args(["upload", "--url", "x"])
        self.assertEqual(caught.exception.code, 2)

    def test_environment_and_token_file(self):
        from litevna.upload import settings_from

        token_file = self.mktemp()
        _write(token_file, b"  from-file\n")
        parse = cli.parser().parse_args
        settings = settings_from(parse(["upload", "x"]), {
            "LITEVNA_URL": "http://h/demo/dicomweb/", "LITEVNA_TOKEN": "from-env"})
        self.assertEqual((settings.base_url, settings.token),
                         ("http://h/demo/dicomweb", "from-env"))
        settings = settings_from(parse(["upload", "x", "--token-file", token_file]),
                                 {"LITEVNA_URL": "http://h/demo/dicomweb", "LITEVNA_TOKEN": "e"})
        self.assertEqual(settings.token, "from-file")
        settings = settings_from(parse(["upload", "x", "--url", "http://h/d/dicomweb",
                                        "--presigned-over", "1MiB", "--batch-mb", "0.5"]), {})
        self.assertEqual((settings.token, settings.presigned_over, settings.batch_bytes),
                         (None, 1 << 20, 500_000))

    def test_a_server_that_is_not_there_fails_every_file(self):
        folder = self.mktemp()
        _write(os.path.join(folder, "a.dcm"), instance())
        code, out, err = self.run_cli(folder, "--url", "http://127.0.0.1:9/demo/dicomweb",
                                      "--retries", "0", "--json", "--quiet")
        self.assertEqual((code, err), (1, ""))
        summary = json.loads(out)
        self.assertEqual(summary["failed"], 1)
        self.assertIn("cannot connect to 127.0.0.1:9", summary["failures"][0]["reason"])


# --- Against a real server ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def live(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("upload-data")
    token = provision(data_dir, "demo")
    provision(data_dir, "other")
    server = LiveServer(data_dir).start()
    server.token = token
    server.read_token = provision(data_dir, "readonly", permissions=("read",))
    server.base = f"{server.url}/demo/dicomweb"
    yield server
    server.stop()


def upload(base, *args, token=None, env=None, stderr=subprocess.PIPE):
    """``python -m litevna upload ARGS --url base [--token token]``."""
    command = [sys.executable, "-m", "litevna", "upload", *args]
    if base:
        command += ["--url", base]
    if token:
        command += ["--token", token]
    return subprocess.run(command, stdout=subprocess.PIPE, stderr=stderr, text=True,
                          timeout=60, env=dict(os.environ, **(env or {})))


def summary_counts(stdout):
    match = re.match(r"stored (\d+), duplicate (\d+), skipped (\d+), failed (\d+)", stdout)
    assert match, stdout
    return tuple(int(n) for n in match.groups())


def failures_of(stdout):
    return dict(re.findall(r"^failed (\S+): (.*)$", stdout, re.MULTILINE))


def stored_uids(live, uids):
    """Which of uids a QIDO search of the store finds."""
    response = requests.get(f"{live.base}/instances", timeout=30, headers=bearer(live.token),
                            params={"SOPInstanceUID": ",".join(uids), "limit": 10000})
    assert response.status_code == 200, response.text
    return {item["00080018"]["Value"][0] for item in response.json()}


def synced_log(server):
    """The server's log once every line about requests answered so far is in it (the server
    writes its log in batches): a marker request's line is waited for."""
    marker = uuid.uuid4().hex
    requests.get(f"{server.url}/healthz?sync={marker}", timeout=10)
    deadline = time.monotonic() + 10
    while marker not in (log := server.log()):
        assert time.monotonic() < deadline, "the server did not log the marker request"
        time.sleep(0.05)
    return log


def post_count(live):
    return len(re.findall(r'"POST /demo/dicomweb/studies HTTP', synced_log(live)))


def _put(path, data):
    _write(str(path), data)
    return str(path)


def test_mixed_folder_twice(live, tmp_path):
    root = tmp_path / "mixed"
    study_a, study_b = new_uid(), new_uid()
    valid = {
        "a/1.dcm": instance(study_uid=study_a), "a/2.dcm": instance(study_uid=study_a),
        "a/deeper/3.dcm": instance(study_uid=study_a), "b/1.dcm": instance(study_uid=study_b),
        "b/2.dcm": instance(study_uid=study_b, rows=64, columns=64),
    }
    for name, data in valid.items():
        _put(root / name, data)
    shutil.copy(root / "a/1.dcm", root / "b/copy-of-a1.dcm")
    whole = instance()
    truncated = _put(root / "broken/truncated.dcm", whole[:-100])  # inside the pixel data
    garbage = _put(root / "broken/garbage.dcm", bytes(128) + b"DICM" + os.urandom(600))
    text = _put(root / "notes.txt", b"study list\n" * 20)
    hidden = {_put(root / ".hidden.dcm", instance()), _put(root / ".git/obj.dcm", instance())}
    os.symlink(root, root / "a" / "deeper" / "loop")

    first = upload(live.base, str(root), token=live.token)
    assert first.returncode == 1, first.stderr
    assert summary_counts(first.stdout) == (5, 1, 0, 3)
    failures = failures_of(first.stdout)
    assert set(failures) == {truncated, garbage, text}
    assert failures[text] == "not a DICOM Part 10 file"
    assert failures[truncated].startswith("0xC000 ")
    assert failures[garbage].startswith("0xC000 ")
    assert "\r" not in first.stderr + first.stdout  # not a TTY: plain lines
    assert first.stderr.startswith("upload: ") and "9/9 files" in first.stderr.splitlines()[-1]

    uids = {sop_uid_of(data) for data in valid.values()}
    hidden_uids = {sop_uid_of(open(path, "rb").read()) for path in hidden}
    assert stored_uids(live, uids | hidden_uids) == uids

    again = upload(live.base, str(root), "--skip-non-dicom", "--json", token=live.token)
    assert again.returncode == 1, again.stderr
    summary = json.loads(again.stdout)
    assert {k: summary[k] for k in ("stored", "duplicate", "skipped", "failed")} == \
        {"stored": 0, "duplicate": 6, "skipped": 1, "failed": 2}
    assert {f["path"] for f in summary["failures"]} == {truncated, garbage}
    assert summary["aborted"] is None


def test_valid_folder_from_the_environment_exits_0(live, tmp_path):
    root = tmp_path / "valid"
    datas = [instance() for _ in range(4)]
    for number, data in enumerate(datas):
        _put(root / f"{number}.dcm", data)
    result = upload(None, str(root), "--quiet",
                    env={"LITEVNA_URL": live.base + "/", "LITEVNA_TOKEN": live.token})
    assert (result.returncode, result.stderr) == (0, "")
    assert summary_counts(result.stdout) == (4, 0, 0, 0)
    assert stored_uids(live, [sop_uid_of(d) for d in datas]) == {sop_uid_of(d) for d in datas}


def test_progress_bar_on_a_terminal(live, tmp_path):
    root = tmp_path / "tty"
    for number in range(3):
        _put(root / f"{number}.dcm", instance())
    controller, terminal = pty.openpty()
    try:
        result = upload(live.base, str(root), token=live.token, stderr=terminal)
        os.close(terminal)
        terminal = None
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal's other end is closed
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
        if terminal is not None:
            os.close(terminal)
    assert result.returncode == 0
    assert shown.startswith(b"\r[") and b"3/3 files" in shown, shown
    assert shown.endswith(b"\r\n")  # the line is ended (the terminal turns \n into \r\n)


@pytest.mark.parametrize("key", ["wrong", "read-only"])
def test_refused_credentials_exit_3_at_once(live, tmp_path, key):
    root = tmp_path / "auth"
    datas = [instance() for _ in range(30)]
    for number, data in enumerate(datas):
        _put(root / f"{number:02d}.dcm", data)
    token = live.token[:-4] + "AAAA" if key == "wrong" else live.read_token
    before = post_count(live)
    started = time.monotonic()
    result = upload(live.base, str(root), "--batch-files", "2", "--concurrency", "2",
                    token=token)
    assert result.returncode == 3, result.stderr
    assert time.monotonic() - started < 10
    assert "litevna upload: the server refused the credentials (HTTP 40" in result.stderr
    assert post_count(live) - before <= 3  # stopped: not one request per batch
    assert stored_uids(live, [sop_uid_of(d) for d in datas]) == set()


def test_batches_over_parallel_connections(live, tmp_path):
    root = tmp_path / "many"
    datas = [instance() for _ in range(120)]
    for number, data in enumerate(datas):
        _put(root / f"s{number // 40}" / f"{number:03d}.dcm", data)
    token_file = _put(tmp_path / "token", live.token.encode() + b"\n")
    with FaultyProxy(live.port, gate=3) as proxy:
        before = post_count(live)
        result = upload(f"{proxy.url}/demo/dicomweb", str(root), "--batch-files", "10",
                        "--concurrency", "3", "--token-file", token_file, "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary_counts(result.stdout) == (120, 0, 0, 0)
    assert post_count(live) - before == 12
    assert proxy.seen == {"stow": 12}
    assert proxy.max_in_flight == 3
    assert len(proxy.connections) == 3  # one keep-alive connection per thread


def test_batch_by_size(live, tmp_path):
    root = tmp_path / "sized"
    for number in range(6):
        _put(root / f"{number}.dcm", instance(rows=256, columns=256))  # 131 kB each
    before = post_count(live)
    result = upload(live.base, str(root), "--batch-mb", "0.3", "--quiet", token=live.token)
    assert summary_counts(result.stdout) == (6, 0, 0, 0)
    assert post_count(live) - before == 3


def test_presigned_upload(live, tmp_path):
    root = tmp_path / "big"
    big = _put(root / "big.dcm", instance(rows=1024, columns=1536))  # 3.1 MB
    small = _put(root / "small.dcm", instance())
    result = upload(live.base, str(root), "--presigned-over", "1MiB", "--json", token=live.token)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["stored"] == 2
    log = synced_log(live)
    assert '"POST /demo/dicomweb/studies/upload-url HTTP' in log
    assert re.search(r'"PUT /\S+ HTTP/1.1" 200', log), log[-2000:]
    assert re.search(r'"POST /demo/dicomweb/studies\?uploadId=\S+ HTTP/1.1" 200', log)
    uids = {sop_uid_of(open(path, "rb").read()) for path in (big, small)}
    assert stored_uids(live, uids) == uids
    with open(big, "rb") as fp:
        data = fp.read()
    assert DataDir(live.data_dir).stored("demo", sop_uid_of(data)) == data  # gunzipped intact


def test_retries_after_transient_failures(live, tmp_path):
    """The first request of each kind fails (a 503, a dropped connection, or a dropped answer
    after the server stored the instances); everything still ends stored, once, and no
    instance of this run counts as a duplicate."""
    root = tmp_path / "flaky"
    datas = [instance() for _ in range(6)] + [instance(rows=1024, columns=1536)]
    for number, data in enumerate(datas):
        _put(root / f"{number}.dcm", data)
    faults = {"stow": "forward-drop", "upload-url": "503", "put": "drop", "claim": "forward-drop"}
    with FaultyProxy(live.port, faults=faults) as proxy:
        result = upload(f"{proxy.url}/demo/dicomweb", str(root), "--batch-files", "3",
                        "--presigned-over", "1MiB", "--json", "--quiet", token=live.token)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert (summary["stored"], summary["duplicate"], summary["failed"]) == (7, 0, 0)
    assert proxy.faults == {}  # every fault happened
    assert proxy.seen == {"stow": 3, "upload-url": 4, "put": 3, "claim": 2}
    put = proxy.headers["put"]  # the client's document, step 2: gzip, no credentials
    assert (put["content-type"], put["content-encoding"], put["transfer-encoding"]) == \
        ("application/dicom", "gzip", "chunked")
    assert "authorization" not in put
    assert proxy.headers["claim"]["authorization"] == f"Bearer {live.token}"
    assert proxy.headers["claim"].get("content-length", "0") == "0"
    uids = {sop_uid_of(d) for d in datas}
    assert stored_uids(live, uids) == uids


def test_413_sends_the_file_presigned(tmp_path):
    data_dir = tmp_path / "data"
    token = provision(data_dir, "demo")
    root = tmp_path / "over"
    big = instance(rows=1024, columns=1536)  # 3.1 MB, over --max-body 2MiB
    _put(root / "a-big.dcm", big)
    _put(root / "b-small.dcm", instance())
    with LiveServer(data_dir, "--max-body", "2MiB") as server:
        result = upload(f"{server.url}/demo/dicomweb", str(root), "--quiet", token=token)
        log = synced_log(server)
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary_counts(result.stdout) == (2, 0, 0, 0)
    # The refused batch, then the big file alone, were answered 413 before their bodies were
    # sent (the access log may not show a request the client hung up on): it went presigned.
    assert re.search(r'"PUT /\S+ HTTP/1.1" 200', log)
    assert re.search(r'"POST /demo/dicomweb/studies\?uploadId=\S+ HTTP/1.1" 200', log)


def _self_signed(folder):
    """(key.pem, cert.pem) of a self-signed certificate for 127.0.0.1, written to folder."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_path, cert_path = os.path.join(folder, "key.pem"), os.path.join(folder, "cert.pem")
    _write(key_path, key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def test_over_tls(tmp_path):
    """HTTPS: a TLS 1.3 session ticket makes the socket readable with no answer in it, which
    must not pass for an early answer; a real early 413 still sends the big file presigned."""
    import ssl
    import urllib.request

    from live import free_port

    key_path, cert_path = _self_signed(str(tmp_path))
    data_dir = tmp_path / "data"
    token = provision(data_dir, "demo")
    root = tmp_path / "tls"
    datas = [instance() for _ in range(3)] + [instance(rows=1024, columns=1536)]
    for number, data in enumerate(datas):
        _put(root / f"{number}.dcm", data)
    port = free_port()
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "litevna", "serve", "--data-dir", str(data_dir),
             *database_args(data_dir), "--listen", f"ssl:{port}:privateKey={key_path}:certKey={cert_path}"
                         ":interface=127.0.0.1", "--max-body", "2MiB"],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        context = ssl.create_default_context(cafile=cert_path)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=context,
                                       timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, \
                    (tmp_path / "server.log").read_text()
                time.sleep(0.05)
        result = upload(f"https://127.0.0.1:{port}/demo/dicomweb", str(root), "--quiet",
                        "--timeout", "10", token=token, env={"SSL_CERT_FILE": cert_path})
    finally:
        server.terminate()
        server.wait(15)
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary_counts(result.stdout) == (4, 0, 0, 0)
    assert re.search(r'"PUT /\S+ HTTP/1.1" 200', (tmp_path / "server.log").read_text())


# --- A proxy that delays, counts and breaks requests -------------------------------------------

def request_kind(method, path):
    if method == "PUT":
        return "put"
    if path.split("?")[0].endswith("/upload-url"):
        return "upload-url"
    return "claim" if "uploadId=" in path else "stow"


class FaultyProxy:
    """An HTTP/1.1 proxy in front of 127.0.0.1:upstream, keeping the Host header (so upload
    URLs point at the proxy). It counts requests per kind and client connections; ``gate``
    holds each request until that many are in flight (or a second passed); ``faults`` fails
    the first request of a kind: "503", "drop" (read it, close without an answer) or
    "forward-drop" (forward it, then close without the answer)."""

    def __init__(self, upstream, faults=None, gate=1):
        self.upstream = upstream
        self.faults = dict(faults or {})
        self.gate = gate
        self.seen = collections.Counter()
        self.headers = {}  # kind → the last such request's headers, names in lower case
        self.connections = set()
        self.in_flight = self.max_in_flight = 0
        self._changed = threading.Condition()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                proxy.handle(self)

            do_PUT = do_GET = do_POST

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def handle(self, handler):
        body = _read_body(handler)
        kind = request_kind(handler.command, handler.path)
        with self._changed:
            self.seen[kind] += 1
            self.headers[kind] = {name.lower(): value for name, value in handler.headers.items()}
            self.connections.add(handler.client_address)
            fault = self.faults.pop(kind, None)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._changed.notify_all()
            self._changed.wait_for(lambda: self.in_flight >= self.gate, timeout=1.0)
        try:
            if fault == "503":
                return _answer(handler, 503, [("Content-Type", "application/json")],
                               b'{"error": "try again", "status": 503}')
            if fault != "drop":
                status, headers, answer = self._forward(handler, body)
            if fault in ("drop", "forward-drop"):
                handler.close_connection = True
                return
            _answer(handler, status, headers, answer)
        finally:
            with self._changed:
                self.in_flight -= 1

    def _forward(self, handler, body):
        connection = http.client.HTTPConnection("127.0.0.1", self.upstream, timeout=60)
        try:
            headers = {name: value for name, value in handler.headers.items()
                       if name.lower() not in ("transfer-encoding", "content-length",
                                               "connection")}
            headers["Content-Length"] = str(len(body))
            connection.request(handler.command, handler.path, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            kept = [(name, value) for name, value in response.getheaders()
                    if name.lower() not in ("transfer-encoding", "content-length", "connection")]
            return response.status, kept, answer
        finally:
            connection.close()


def _read_body(handler):
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        body = b""
        while True:
            size = int(handler.rfile.readline().split(b";")[0], 16)
            body += handler.rfile.read(size)
            handler.rfile.readline()
            if size == 0:
                return body
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def _answer(handler, status, headers, body):
    handler.send_response(status)
    for name, value in headers:
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
