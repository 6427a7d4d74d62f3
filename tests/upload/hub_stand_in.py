"""A stand-in for the Hugging Face hub API, on 127.0.0.1, for tests that must not reach the hub.

It implements the requests that ``HfApi.create_repo`` and ``HfApi.upload_folder`` send in
huggingface_hub 2.4 (read from its ``hf_api.py``, ``_commit_api.py`` and
``_upload_pipeline.py``):

- ``POST /api/repos/create``: JSON ``{"name", "organization", "visibility", "type"}``;
- ``POST /api/validate-yaml``: the model card's metadata check (the client without hf_xet);
- ``POST /api/{type}s/{repo_id}/preupload/{revision}``: the stand-in returns ``"regular"`` for
  every file, so the client sends each file's bytes inside the commit and never takes the LFS
  or xet path;
- ``POST /api/{type}s/{repo_id}/commit/{revision}``: NDJSON, a header line, then one
  ``{"key": "file", "value": {"path", "content" (base64)}}`` line per file.

Every request is recorded, and any other request gets 404, so a test sees exactly what arrived.
The server stops itself after ``lifetime_s`` seconds even when a test forgets to stop it.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPO_PATH = re.compile(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)/(preupload|commit)/([^/?]+)")


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes


@dataclass
class HubState:
    """What the stand-in received: requests, created repositories and committed files."""

    requests: list[RecordedRequest] = field(default_factory=list)
    created: list[dict] = field(default_factory=list)
    commits: list[dict] = field(default_factory=list)
    # Namespaces in which creating a repository gets status 403, to test rejected uploads.
    forbidden_namespaces: set[str] = field(default_factory=set)


class HubStandIn:
    """Run the stand-in in a background thread; use as a context manager."""

    def __init__(self, lifetime_s: float = 120.0):
        self.state = HubState()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self.state))
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.1}
        )
        self._thread.daemon = True
        self._deadline = threading.Timer(lifetime_s, self.stop)
        self._deadline.daemon = True

    def __enter__(self) -> "HubStandIn":
        self._thread.start()
        self._deadline.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self) -> None:
        self._deadline.cancel()
        if self._thread.is_alive():
            self.server.shutdown()
        self.server.server_close()


def _handler_for(state: HubState):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass  # Keep test output clean; the requests are recorded instead.

        def do_GET(self):
            self._record(b"")
            self._reply(404, {"error": "Repository Not Found"})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else self._read_chunked()
            self._record(body)
            path = self.path.split("?")[0]
            if path == "/api/repos/create":
                self._create_repo(json.loads(body))
            elif path == "/api/validate-yaml":
                self._reply(200, {"errors": [], "warnings": []})
            elif (match := REPO_PATH.match(path)) is not None:
                repo_type, repo_id, action, revision = match.groups()
                if action == "preupload":
                    self._preupload(json.loads(body))
                else:
                    self._commit(repo_type, repo_id, revision, body)
            else:
                self._reply(404, {"error": f"stand-in hub: no route for POST {path}"})

        def _read_chunked(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                return b""
            chunks = []
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()

        def _record(self, body: bytes) -> None:
            # Header names are case-insensitive, so they are stored in lower case.
            headers = {name.lower(): value for name, value in self.headers.items()}
            state.requests.append(RecordedRequest(self.command, self.path, headers, body))

        def _create_repo(self, payload: dict) -> None:
            if payload.get("organization") in state.forbidden_namespaces:
                self._reply(
                    403,
                    {"error": "You don't have the rights to create a model under this namespace"},
                )
                return
            state.created.append(payload)
            repo_id = f"{payload['organization']}/{payload['name']}"
            self._reply(200, {"url": f"http://{self.headers['Host']}/{repo_id}", "name": repo_id})

        def _preupload(self, payload: dict) -> None:
            files = [
                {"path": item["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                for item in payload["files"]
            ]
            self._reply(200, {"files": files, "commitOid": "0" * 40})

        def _commit(self, repo_type: str, repo_id: str, revision: str, body: bytes) -> None:
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            header = next(line["value"] for line in lines if line["key"] == "header")
            files = {
                line["value"]["path"]: base64.b64decode(line["value"]["content"])
                for line in lines
                if line["key"] == "file"
            }
            other_keys = sorted({line["key"] for line in lines} - {"header", "file"})
            state.commits.append(
                {
                    "repo_type": repo_type,
                    "repo_id": repo_id,
                    "revision": revision,
                    "summary": header["summary"],
                    "description": header.get("description", ""),
                    "files": files,
                    "other_keys": other_keys,
                }
            )
            commit_oid = f"{len(state.commits):040x}"
            self._reply(
                200,
                {
                    "commitUrl": f"http://{self.headers['Host']}/{repo_id}/commit/{commit_oid}",
                    "commitOid": commit_oid,
                    "pullRequestUrl": None,
                },
            )

        def _reply(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
