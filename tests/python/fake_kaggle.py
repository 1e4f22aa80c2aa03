"""A fake Kaggle API for the %kaggle tests, following the real one (kagglesdk 0.1.x).

Routes: `POST /v1/<package>.<Service>/<Method>` (and `/api/v1/...`, the layout of the
official SDK's non-production environments, so the official CLI can be pointed at it with
KAGGLE_API_ENVIRONMENT=LOCALHOST) with lowerCamelCase JSON bodies and answers; the download
methods answer `302 Location: http://HOST:PORT/mock-gcs-bucket/file-path/.../NAME?X-Goog-Signature=...`
and that GET serves the bytes as Google Cloud Storage does (Content-Length, ETag,
Last-Modified, Accept-Ranges, x-goog-hash, Range and If-Range → 206 or 200, 416, XML errors);
`StartSubmissionUpload` hands out `createUrl` = `http://HOST:PORT/upload/ID` for a PUT, and
`CreateSubmission` checks `blobFileTokens` against the token it issued. Errors are JSON
`{"code": N, "message": ...}` with status N.

Credentials: HTTP Basic `user:key` (see USERS) or `Bearer TOKEN` (see TOKENS). Anonymous
access works only for public datasets, as on Kaggle.

Switches (attributes of the server, set by the tests between cells):
  cut_after / cut_count  cut the next `cut_count` file responses after `cut_after` body bytes
  fail_storage           answer the next N file GETs with 503
  fail_after_cut         after a cut, answer the next N file GETs with 503
  fail_next              answer the next N API calls with 500
  rate_limit_next / retry_after   answer the next N API calls with 429 and this Retry-After
  code_in_body           answer API calls with HTTP 200 and a JSON body whose code is 401
  one_use_signatures     a signed URL works once (then 403 ExpiredToken, as an expired one)
  throttle               seconds to sleep after each 64 KiB of a file body
  ranges                 honour Range requests (and say Accept-Ranges: bytes)
  archives[slug]         the bytes served as a competition's all-files zip (corrupt, zip-slip,
                         or any hostile zip a test builds)
  echo_form              how a 401 echoes the credentials it was sent: plain, upper, percent
                         (every byte %XX) or spaced (a space between characters), as a
                         hostile server might disguise them
  rules_not_accepted     competitions whose data and submissions answer 403
Every request is recorded in `requests` (method, path, headers, json).

It binds to 127.0.0.1 only. Run it by hand: `python fake_kaggle.py [--port 8080] [--big-mib N]`.
"""

import base64
import hashlib
import io
import json
import os
import random
import socket
import threading
import time
import zipfile
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

USERS = {"alice": "alice-key-0123456789abcdef", "bob": "bob-key-0123456789abcdef"}
TOKENS = {
    "KGAT_11111111111111111111111111111111": "carol",
    "KGAT_22222222222222222222222222222222": "dave",
    "KGAT_33333333333333333333333333333333": "erin",
}
# A fixed Last-Modified in the past, so freshly downloaded files are up to date.
MODIFIED = 1_727_776_800  # 2024-10-01 10:00:00 UTC
RULES_MESSAGE = "You must accept this competition's rules before you'll be able to download files."

_CRC_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ (0x82F63B78 if _c & 1 else 0)
    _CRC_TABLE.append(_c)


def crc32c(data):
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


@dataclass
class Blob:
    data: bytes
    modified: int = MODIFIED
    etag: str = ""
    md5: str = ""
    crc32c: str = ""

    def __post_init__(self):
        self.refresh()

    def refresh(self):
        digest = hashlib.md5(self.data).digest()
        self.md5 = base64.b64encode(digest).decode()
        self.etag = f'"{digest.hex()}-{self.modified}"'
        # Pure Python CRC32C is slow: only for small files (GCS sends both).
        self.crc32c = (
            base64.b64encode(crc32c(self.data).to_bytes(4, "big")).decode()
            if len(self.data) <= 256 * 1024
            else ""
        )

    @property
    def last_modified(self):
        return formatdate(self.modified, usegmt=True)


def text_rows(count, seed):
    rng = random.Random(seed)
    lines = ["PassengerId,Survived,Pclass,Name,Age,Fare"]
    for i in range(count):
        lines.append(f"{i + 1},{rng.randint(0, 1)},{rng.randint(1, 3)},Person {i},{rng.randint(1, 80)},{rng.random() * 100:.4f}")
    return ("\n".join(lines) + "\n").encode()


def make_zip(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(2024, 10, 1, 10, 0, 0)), data, zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def intact_zip():
    """The archive that corrupt_zip() damages: same length, same members."""
    return make_zip({"first.csv": b"good,data\n1,2\n", "second.csv": text_rows(3000, 7)})


def corrupt_zip():
    """A zip whose second member's compressed data is damaged (the first is fine)."""
    data = bytearray(intact_zip())
    at = data.find(b"second.csv") + len("second.csv") + 200
    for i in range(at, at + 64):
        data[i] ^= 0x5A
    return bytes(data)


def zipslip_zip():
    """A zip with an entry that climbs out of the target directory."""
    return make_zip({"fine.txt": b"ok\n", "../evil.txt": b"gotcha\n"})


def disguise(text, form):
    """`text` as a hostile server might echo it (see the echo_form switch)."""
    if form == "upper":
        return text.upper()
    if form == "percent":
        return "".join(f"%{byte:02X}" for byte in text.encode())
    if form == "spaced":
        return " ".join(text)
    return text


def digits():
    """scikit-learn's 8x8 handwritten digits (1,797 images), read from the installed package
    (no download): train.csv (label, 64 pixels), test.csv (id, 64 pixels), sample_submission.csv,
    and the test labels the fake scores submissions against."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")
    rows = [line.split(",") for line in gzip.open(path, "rt").read().split()]
    pixels = ",".join(f"pixel{i}" for i in range(64))
    train, test, answers = [f"label,{pixels}"], [f"id,{pixels}"], {}
    for index, row in enumerate(rows):
        values, label = [str(int(float(v))) for v in row[:64]], str(int(float(row[64])))
        if index % 6 == 5:
            answers[str(len(answers) + 1)] = label
            test.append(f"{len(answers)}," + ",".join(values))
        else:
            train.append(f"{label}," + ",".join(values))
    sample = ["id,label"] + [f"{i},0" for i in answers]
    files = {name: ("\n".join(lines) + "\n").encode() for name, lines in
             [("train.csv", train), ("test.csv", test), ("sample_submission.csv", sample)]}
    return files, answers


def _competitions():
    titanic = {
        "train.csv": text_rows(900, 1),
        "test.csv": text_rows(418, 2),
        "gender_submission.csv": b"PassengerId,Survived\n" + b"".join(f"{892 + i},0\n".encode() for i in range(418)),
    }
    rng = random.Random(3)
    big = {
        "big.bin": rng.randbytes(24 << 20),
        "medium.bin": rng.randbytes(4 << 20),
    }
    return {
        "titanic": {"title": "Titanic - Machine Learning from Disaster", "category": "Getting Started", "reward": "Knowledge", "teams": 15234, "files": titanic},
        "spaceship-titanic": {"title": "Spaceship Titanic", "category": "Getting Started", "reward": "Knowledge", "teams": 2000, "files": {"train.csv": text_rows(10, 4)}},
        "big-data": {"title": "Big Data", "category": "Research", "reward": "$10,000", "teams": 12, "files": big},
        "broken-zip": {"title": "Broken Zip", "category": "Playground", "reward": "Swag", "teams": 3, "files": {"first.csv": b"good,data\n1,2\n"}},
        "evil-zip": {"title": "Evil Zip", "category": "Playground", "reward": "Swag", "teams": 3, "files": {"fine.txt": b"ok\n"}},
        "digits": {"title": "Digit Recognizer (8x8)", "category": "Getting Started", "reward": "Knowledge", "teams": 1797,
                   "lazy": digits},
    }


def _datasets():
    return {
        ("heptapod", "titanic"): {
            "title": "Titanic dataset",
            "license": "CC0-1.0",
            "versions": {1: {"titanic.csv": text_rows(50, 5)}, 2: {"titanic.csv": text_rows(891, 6), "README.md": b"# Titanic\n"}},
        },
    }


class FakeKaggle(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port=0, big_mib=0):
        super().__init__(("127.0.0.1", port), Handler)
        self.lock = threading.Lock()
        self.competitions = _competitions()
        self.datasets = _datasets()
        if big_mib:
            # CSV-like members of 64 MiB (compressible about 2:1, like real data).
            block = text_rows(16_000, 8)
            block = (block * ((1 << 20) // len(block) + 1))[: 1 << 20]
            rng = random.Random(9)
            members = {}
            for i in range(max(1, big_mib // 64)):
                chunks = [block[rng.randrange(1 << 19):] + block[: rng.randrange(1 << 19)] for _ in range(min(64, big_mib))]
                members[f"part-{i:03}.csv"] = b"".join(chunks)
            self.datasets[("bench", "big")] = {"title": "Benchmark", "license": "CC0-1.0", "versions": {1: members}}
        self.blobs = {}
        self.signatures = {}
        self.uploads = {}
        self.submissions = {}
        self.next_ref = 1000
        self.requests = []
        self.archives = {}
        self.reset()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def reset(self):
        """Every switch off, records cleared (data and submissions stay)."""
        with self.lock:
            self.cut_after = None
            self.cut_count = 0
            self.fail_storage = 0
            self.fail_after_cut = 0
            self.fail_next = 0
            self.rate_limit_next = 0
            self.retry_after = "3600"
            self.code_in_body = False
            self.one_use_signatures = False
            self.throttle = 0.0
            self.ranges = True
            self.rules_not_accepted = {"spaceship-titanic"}
            self.archives = {"broken-zip": corrupt_zip(), "evil-zip": zipslip_zip()}
            self.echo_form = "plain"
            self.polls_until_scored = 2
            self.requests = []

    def start(self):
        thread = threading.Thread(target=self.serve_forever, daemon=True)
        thread.start()
        return self

    def stop(self):
        self.shutdown()
        self.server_close()

    # --- helpers for tests ---------------------------------------------------------

    def calls(self, method=None, path_part=None):
        with self.lock:
            return [
                r for r in self.requests
                if (method is None or r["method"] == method) and (path_part is None or path_part in r["path"])
            ]

    def blob(self, key, data):
        """The blob at `key`, created (or updated when its bytes changed)."""
        with self.lock:
            blob = self.blobs.get(key)
            if blob is None or blob.data is not data and blob.data != data:
                blob = self.blobs[key] = Blob(data)
            return blob

    def sign(self, key):
        with self.lock:
            signature = f"sig{len(self.signatures) + 1}-{random.getrandbits(32):08x}"
            self.signatures[signature] = 0
        return f"{self.url}/mock-gcs-bucket/file-path/{key}?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Signature={signature}"

    def take(self, name):
        """Decrements a countdown switch; True while it was positive."""
        with self.lock:
            value = getattr(self, name)
            if value > 0:
                setattr(self, name, value - 1)
                return True
            return False


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeKaggle

    def log_message(self, format, *args):
        pass

    # --- plumbing ----------------------------------------------------------------

    def record(self, body):
        parsed = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        entry = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "json": parsed,
            "size": len(body or b""),
        }
        with self.server.lock:
            self.server.requests.append(entry)
        return entry

    def send(self, status, body=b"", content_type="application/json", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def json(self, status, value, headers=()):
        self.send(status, json.dumps(value).encode(), headers=headers)

    def error(self, code, message, headers=()):
        self.json(code, {"code": code, "message": message}, headers=headers)

    def gcs_error(self, status, code, message):
        body = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
        self.send(status, body.encode(), content_type="application/xml; charset=UTF-8")

    def redirect(self, url):
        self.send(302, b"", content_type="text/html", headers=[("Location", url)])

    def who(self):
        """The user the Authorization header names, None if absent, False if bad."""
        header = self.headers.get("Authorization", "")
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme == "Bearer":
            return TOKENS.get(value.strip(), False)
        if scheme == "Basic":
            try:
                user, _, key = base64.b64decode(value).decode().partition(":")
            except ValueError:
                return False
            return user if USERS.get(user) == key else False
        return False

    # --- verbs ---------------------------------------------------------------------

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.record(body)
        path = urlsplit(self.path).path
        for prefix in ("/api/v1/", "/v1/"):
            if path.startswith(prefix):
                service, _, method = path[len(prefix):].partition("/")
                try:
                    request = json.loads(body or b"{}")
                except ValueError:
                    return self.error(400, "Request body is not JSON")
                return self.rpc(service, method, request)
        self.error(404, f"No route {path}")

    def do_PUT(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.record(body)
        upload_id = urlsplit(self.path).path.rsplit("/", 1)[-1]
        with self.server.lock:
            upload = self.server.uploads.get(upload_id)
            if upload is None:
                return self.gcs_error(404, "NoSuchUpload", "No such upload")
            upload["data"] = body
        self.send(200, b"", content_type="text/plain")

    def do_GET(self):
        entry = self.record(b"")
        parts = urlsplit(self.path)
        prefix = "/mock-gcs-bucket/file-path/"
        if not parts.path.startswith(prefix):
            return self.gcs_error(404, "NoSuchKey", "The specified key does not exist.")
        key = parts.path[len(prefix):]
        signature = parse_qs(parts.query).get("X-Goog-Signature", [""])[0]
        entry["signature"] = signature
        server = self.server
        with server.lock:
            blob = server.blobs.get(key)
            uses = server.signatures.get(signature)
            if uses is not None:
                server.signatures[signature] = uses + 1
        if uses is None:
            return self.gcs_error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.")
        if server.one_use_signatures and uses >= 1:
            return self.gcs_error(400, "ExpiredToken", "Invalid argument: the signed URL has expired.")
        if blob is None:
            return self.gcs_error(404, "NoSuchKey", "The specified key does not exist.")
        if server.take("fail_storage"):
            return self.gcs_error(503, "ServiceUnavailable", "Service Unavailable")
        self.serve_blob(blob)

    def serve_blob(self, blob):
        server = self.server
        data = blob.data
        total = len(data)
        start, end, status = 0, total - 1, 200
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if wanted and server.ranges and (if_range is None or if_range in (blob.etag, blob.last_modified)):
            spec = wanted.strip().removeprefix("bytes=")
            first, _, last = spec.partition("-")
            try:
                start = int(first)
                end = min(int(last), total - 1) if last else total - 1
            except ValueError:
                start, end = 0, total - 1
            if start >= total or start > end:
                return self.send(416, b"", content_type="text/plain", headers=[("Content-Range", f"bytes */{total}")])
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Last-Modified", blob.last_modified)
        self.send_header("ETag", blob.etag)
        if server.ranges:
            self.send_header("Accept-Ranges", "bytes")
        hashes = [f"md5={blob.md5}"] + ([f"crc32c={blob.crc32c}"] if blob.crc32c else [])
        self.send_header("x-goog-hash", ",".join(hashes))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
        self.end_headers()
        cut_at = None
        with server.lock:
            if server.cut_count > 0 and server.cut_after is not None:
                server.cut_count -= 1
                cut_at = server.cut_after
        sent = 0
        position = start
        chunk = 64 * 1024
        try:
            while position <= end:
                piece = data[position:min(position + chunk, end + 1)]
                if cut_at is not None and sent + len(piece) > cut_at:
                    self.wfile.write(piece[: max(cut_at - sent, 0)])
                    self.wfile.flush()
                    self.close_connection = True
                    with server.lock:
                        server.fail_storage += server.fail_after_cut
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(piece)
                sent += len(piece)
                position += len(piece)
                if server.throttle:
                    self.wfile.flush()
                    time.sleep(server.throttle)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # --- the API -------------------------------------------------------------------

    def rpc(self, service, method, request):
        server = self.server
        if server.take("fail_next"):
            return self.error(500, "Internal error")
        if server.take("rate_limit_next"):
            return self.error(429, "Too many requests", headers=[("Retry-After", server.retry_after)])
        user = self.who()
        if server.code_in_body:
            return self.json(200, {"code": 401, "message": "Unauthenticated"})
        public = service == "datasets.DatasetApiService" and method in ("ListDatasetFiles", "GetDatasetMetadata", "DownloadDataset")
        if user is False:
            presented = self.headers.get("Authorization", "")
            # Like some real servers, echo what was presented (the client must scrub it).
            detail = presented.partition(" ")[2]
            if presented.startswith("Basic "):
                try:
                    detail = base64.b64decode(detail).decode()
                except ValueError:
                    pass
            return self.error(401, f"Unauthenticated: invalid credentials {disguise(detail, server.echo_form)}")
        if user is None and not public and method != "IntrospectToken":
            return self.error(401, "Unauthenticated")
        handler = getattr(self, f"{service.split('.')[0]}_{method}", None)
        if handler is None:
            return self.error(404, f"Unknown method {service}/{method}")
        return handler(request, user)

    def security_IntrospectToken(self, request, user):
        owner = TOKENS.get(request.get("token", ""))
        self.json(200, {"active": owner is not None, "username": owner or ""})

    def competition(self, request, check_rules=True):
        found, slug = self._competition(request, check_rules)
        if found is not None and "lazy" in found:
            with self.server.lock:
                if "lazy" in found:
                    found["files"], found["answers"] = found.pop("lazy")()
        return found, slug

    def _competition(self, request, check_rules=True):
        slug = request.get("competitionName", "")
        competition = self.server.competitions.get(slug)
        if competition is None:
            self.error(404, f"Competition '{slug}' not found")
            return None, slug
        if check_rules and slug in self.server.rules_not_accepted:
            self.error(403, RULES_MESSAGE)
            return None, slug
        return competition, slug

    def competitions_ListCompetitions(self, request, user):
        search = request.get("search", "").lower()
        items = [
            {
                "ref": f"https://www.kaggle.com/competitions/{slug}",
                "title": c["title"],
                "deadline": "2030-01-01T23:59:00Z",
                "category": c["category"],
                "reward": c["reward"],
                "teamCount": c["teams"],
                "userHasEntered": slug == "titanic",
            }
            for slug, c in self.server.competitions.items()
            if search in slug or search in c["title"].lower()
        ]
        page_size = int(request.get("pageSize") or 20)
        self.json(200, {"competitions": items[:page_size], "nextPageToken": ""})

    def competitions_ListDataFiles(self, request, user):
        competition, _ = self.competition(request)
        if competition is None:
            return
        names = sorted(competition["files"])
        size = int(request.get("pageSize") or 20)
        start = int(request.get("pageToken") or 0)
        page = names[start:start + size]
        files = [
            {"name": n, "totalBytes": str(len(competition["files"][n])), "creationDate": "2024-10-01T10:00:00.123Z"}
            for n in page
        ]
        token = str(start + size) if start + size < len(names) else ""
        self.json(200, {"files": files, "nextPageToken": token})

    def competitions_DownloadDataFiles(self, request, user):
        competition, slug = self.competition(request)
        if competition is None:
            return
        data = self.server.archives.get(slug)
        if data is None:
            if "_zip" not in competition:
                competition["_zip"] = make_zip(competition["files"])
            data = competition["_zip"]
        self.server.blob(f"competitions/{slug}/{slug}.zip", data)
        self.redirect(self.server.sign(f"competitions/{slug}/{slug}.zip"))

    def competitions_DownloadDataFile(self, request, user):
        competition, slug = self.competition(request)
        if competition is None:
            return
        name = request.get("fileName", "")
        if name not in competition["files"]:
            return self.error(404, f"File '{name}' not found")
        self.server.blob(f"competitions/{slug}/{name}", competition["files"][name])
        self.redirect(self.server.sign(f"competitions/{slug}/{name}"))

    def competitions_StartSubmissionUpload(self, request, user):
        competition, slug = self.competition(request)
        if competition is None:
            return
        with self.server.lock:
            upload_id = f"u{len(self.server.uploads) + 1}"
            token = f"blob-token-{upload_id}-{random.getrandbits(24):06x}"
            self.server.uploads[upload_id] = {"token": token, "data": None, "request": request}
        self.json(200, {"token": token, "createUrl": f"{self.server.url}/upload/{upload_id}"})

    def competitions_CreateSubmission(self, request, user):
        competition, slug = self.competition(request)
        if competition is None:
            return
        token = request.get("blobFileTokens", "")
        with self.server.lock:
            upload = next((u for u in self.server.uploads.values() if u["token"] == token), None)
        if upload is None or upload["data"] is None:
            return self.error(400, "Invalid blobFileTokens: upload the file first")
        with self.server.lock:
            self.server.next_ref += 1
            ref = self.server.next_ref
            bad = b"bad" in upload["data"]
            self.server.submissions.setdefault(slug, []).insert(0, {
                "answers": competition.get("answers"),
                "data": upload["data"],
                "ref": ref,
                "fileName": upload["request"].get("fileName", ""),
                "date": "2024-10-02T12:34:56.789Z",
                "description": request.get("submissionDescription", ""),
                "status": "PENDING",
                "publicScore": "",
                "privateScore": "",
                "errorDescription": "",
                "totalBytes": len(upload["data"]),
                "submittedBy": user,
                "polls": 0,
                "bad": bad,
            })
        self.json(200, {"message": f"Successfully submitted to {competition['title']}", "ref": ref})

    def find_submission(self, ref):
        for submissions in self.server.submissions.values():
            for submission in submissions:
                if submission["ref"] == ref:
                    return submission
        return None

    def score(self, submission):
        """Scores a pending submission after a few polls."""
        if submission["status"] == "PENDING" and submission["polls"] >= self.server.polls_until_scored:
            if submission["answers"] is not None:
                self.score_by_accuracy(submission)
            elif submission["bad"]:
                submission["status"] = "ERROR"
                submission["errorDescription"] = "Submission file has 3 rows, expected 418 rows."
            else:
                submission["status"] = "COMPLETE"
                submission["publicScore"] = "0.77511"
                submission["privateScore"] = ""

    @staticmethod
    def score_by_accuracy(submission):
        """A competition with held-out labels scores a submission (`id,label` rows) by accuracy."""
        answers = submission["answers"]
        lines = submission["data"].decode(errors="replace").split()
        rows = [line.split(",") for line in lines[1:]]
        if len(rows) != len(answers) or any(len(row) != 2 for row in rows):
            submission["status"] = "ERROR"
            submission["errorDescription"] = f"Submission file has {len(rows)} rows, expected {len(answers)} rows."
            return
        correct = sum(answers.get(row[0].strip()) == row[1].strip() for row in rows)
        submission["status"] = "COMPLETE"
        submission["publicScore"] = f"{correct / len(answers):.5f}"

    @staticmethod
    def public(submission, long_enum=False):
        status = submission["status"]
        return {
            key: value for key, value in submission.items() if key not in ("polls", "bad", "answers", "data")
        } | {"status": f"SUBMISSION_STATUS_{status}" if long_enum else status}

    def competitions_GetSubmission(self, request, user):
        ref = int(request.get("ref", 0))
        with self.server.lock:
            submission = self.find_submission(ref)
            if submission is not None:
                submission["polls"] += 1
                self.score(submission)
                answer = self.public(submission)
        if submission is None:
            return self.error(404, f"Submission {ref} not found")
        self.json(200, answer)

    def competitions_ListSubmissions(self, request, user):
        competition, slug = self.competition(request, check_rules=False)
        if competition is None:
            return
        with self.server.lock:
            items = [self.public(s, long_enum=True) for s in self.server.submissions.get(slug, [])]
        self.json(200, {"submissions": items, "nextPageToken": ""})

    def competitions_GetSubmissionLimits(self, request, user):
        _, slug = self.competition(request, check_rules=False)
        count = len(self.server.submissions.get(slug, []))
        self.json(200, {"numToday": count, "numTotal": count, "numAllowedNow": max(0, 5 - count), "limitedByTotal": False})

    def competitions_GetLeaderboard(self, request, user):
        competition, slug = self.competition(request, check_rules=False)
        if competition is None:
            return
        rows = [
            {"teamId": 9000 + i, "teamName": name, "submissionDate": "2024-09-0%dT08:00:00Z" % (i + 1), "score": score}
            for i, (name, score) in enumerate([("Iceberg Dodgers", "1.00000"), ("Lifeboat Labs", "0.98325"), ("Deck Chairs", "0.80382")])
        ]
        self.json(200, {"submissions": rows[: int(request.get("pageSize") or 20)], "nextPageToken": ""})

    def competitions_DownloadLeaderboard(self, request, user):
        competition, slug = self.competition(request, check_rules=False)
        if competition is None:
            return
        csv = b"Rank,TeamId,TeamName,LastSubmissionDate,Score\n1,9000,Iceberg Dodgers,2024-09-01 08:00:00,1.00000\n"
        data = make_zip({f"{slug}-publicleaderboard.csv": csv})
        self.send(200, data, content_type="application/zip", headers=[("Last-Modified", formatdate(MODIFIED, usegmt=True))])

    def dataset(self, request):
        key = (request.get("ownerSlug", ""), request.get("datasetSlug", ""))
        dataset = self.server.datasets.get(key)
        if dataset is None:
            self.error(404, f"Dataset '{key[0]}/{key[1]}' not found")
            return None, None, None
        versions = dataset["versions"]
        version = int(request.get("datasetVersionNumber") or max(versions))
        if version not in versions:
            self.error(404, f"Version {version} of '{key[0]}/{key[1]}' not found")
            return None, None, None
        return dataset, key, version

    def datasets_ListDatasets(self, request, user):
        search = request.get("search", "").lower()
        items = []
        for (owner, slug), dataset in self.server.datasets.items():
            if search and search not in slug and search not in dataset["title"].lower():
                continue
            files = dataset["versions"][max(dataset["versions"])]
            items.append({
                "ref": f"{owner}/{slug}",
                "title": dataset["title"],
                "totalBytes": sum(len(d) for d in files.values()),
                "lastUpdated": "2024-10-01T10:00:00Z",
                "downloadCount": 4242,
                "voteCount": 99,
                "usabilityRating": 0.88235,
            })
        self.json(200, {"datasets": items, "nextPageToken": ""})

    def datasets_ListDatasetFiles(self, request, user):
        dataset, _, version = self.dataset(request)
        if dataset is None:
            return
        files = dataset["versions"][version]
        self.json(200, {
            "datasetFiles": [
                {"name": n, "totalBytes": len(d), "creationDate": "2024-10-01T10:00:00Z"} for n, d in sorted(files.items())
            ],
            "errorMessage": "",
            "nextPageToken": "",
        })

    def datasets_GetDatasetMetadata(self, request, user):
        dataset, key, _ = self.dataset(request)
        if dataset is None:
            return
        self.json(200, {"info": {"ownerUser": key[0], "datasetSlug": key[1], "title": dataset["title"], "licenses": [{"name": dataset["license"]}]}, "errorMessage": ""})

    def datasets_DownloadDataset(self, request, user):
        dataset, key, version = self.dataset(request)
        if dataset is None:
            return
        files = dataset["versions"][version]
        name = request.get("fileName")
        base = f"datasets/{key[0]}/{key[1]}/{version}"
        if name:
            if name not in files:
                return self.error(404, f"File '{name}' not found")
            self.server.blob(f"{base}/{name}", files[name])
            return self.redirect(self.server.sign(f"{base}/{name}"))
        if f"_zip{version}" not in dataset:
            dataset[f"_zip{version}"] = make_zip(files)
        archive = dataset[f"_zip{version}"]
        # The signed URL's name is not the slug: the client must name it SLUG.zip.
        self.server.blob(f"{base}/archive.zip", archive)
        self.redirect(self.server.sign(f"{base}/archive.zip"))


def main():
    import argparse

    parser = argparse.ArgumentParser(description="A fake Kaggle API on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--big-mib", type=int, default=0, help="add dataset bench/big with this many MiB")
    args = parser.parse_args()
    server = FakeKaggle(port=args.port, big_mib=args.big_mib)
    print(f"fake Kaggle API at {server.url} (KAGGLE_API_ENDPOINT={server.url})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
