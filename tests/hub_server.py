"""A local stand-in for the Hugging Face Hub's HTTP API, so tests run the real client offline.

It implements what huggingface_hub 2.4's unmodified client calls to create a repo, commit files
(regular blobs inline, large files through the git-LFS batch API and a PUT) and download them
again, so `HfApi.create_repo` / `create_branch` / `create_commit` / `upload_folder`,
`hf_hub_download` and `AutoModel*.from_pretrained(repo_id)` / `pipeline(model=repo_id)` all run
against it (DESIGN.md section 4 lists the endpoints):

    POST /api/repos/create                               create a repo (409 when it exists)
    POST /api/validate-yaml                              README.md metadata check before a commit
    GET  /api/models/{repo}[/revision/{rev}]             repo info (sha, siblings)
    POST /api/models/{repo}/branch/{branch}              create a branch (409 when it exists)
    POST /api/models/{repo}/preupload/{rev}              upload mode + remote oid of each file
    POST /{repo}.git/info/lfs/objects/batch              git-LFS batch API (basic transfer)
    PUT  /lfs-upload/{oid}                               the LFS object itself (sha256 checked)
    POST /api/models/{repo}/commit/{rev}                 NDJSON commit: header / file / lfsFile /
                                                         deletedFile
    GET  /api/models/{repo}/tree/{rev}[/{path}]          file listing
    HEAD/GET /{repo}/resolve/{rev}/{path}                file download with X-Repo-Commit, ETag,
                                                         X-Linked-Etag

Use it as a context manager; the client must see `HF_ENDPOINT=server.url` before huggingface_hub
is imported (its constants are read at import time), `HF_HUB_DISABLE_XET=1` (else large files go
to a Xet CAS this server lacks) and `HF_HUB_OFFLINE=0`. `server.env(token)` gives those variables.

Hand-written on the standard library's `http.server` because no installable server accepts
pushes (`olah` mirrors downloads only; `hf-local-hub` lacks its server binary).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

# What the Hub stores in git-LFS: its default .gitattributes patterns, and anything >= 10 MB.
LFS_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".h5",
    ".onnx",
    ".model",
    ".msgpack",
    ".npz",
    ".zip",
)
LFS_MIN_SIZE = 10 * 1024 * 1024
BASE_MODEL_RELATIONS = ("adapter", "merge", "quantized", "finetune")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def git_blob_oid(content: bytes) -> str:
    """The git object id of a blob (what the Hub reports as a regular file's oid and ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass(frozen=True)
class StoredFile:
    content: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def oid(self) -> str:
        # The Hub identifies an LFS file by the sha256 of its content and a regular file by its git
        # blob id.
        return self.sha256 if self.lfs else git_blob_oid(self.content)


@dataclass
class Commit:
    oid: str
    files: dict[str, StoredFile]
    message: str
    parent: str | None


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        oid = self.branches.get(revision, revision)
        return self.commits.get(oid)

    def history(self, branch: str = "main") -> list[Commit]:
        commits, oid = [], self.branches.get(branch)
        while oid is not None:
            commit = self.commits[oid]
            commits.append(commit)
            oid = commit.parent
        return commits


class HttpError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


class HubServer:
    """A Hub stand-in on 127.0.0.1 (random free port), serving from a background thread.

    Args:
        token: when set, every write (create, branch, preupload, LFS, commit) must carry
            `Authorization: Bearer <token>`, else 401, like the real Hub.

    Attributes a test may set: `fail_commit` ({repo_id: HTTP status} the commit endpoint answers
    with instead of committing, e.g. 500, after the files were preuploaded); read: `repos`,
    `requests` ((method, path) of every call), `unhandled` (calls no route matched).
    """

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.fail_commit: dict[str, int] = {}
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.unhandled: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._counter = itertools.count()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="hub-stand-in", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def env(self, token: str | None = None) -> dict[str, str]:
        """Environment variables that point huggingface_hub (imported afterwards) at this server."""
        values = {
            "HF_ENDPOINT": self.url,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_OFFLINE": "0",
            "TRANSFORMERS_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
        if token is not None:
            values["HF_TOKEN"] = token
        return values

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Helpers for tests ---------------------------------------------------------------------
    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """{path: content} of a repo at a revision."""
        commit = self.repos[repo_id].resolve(revision)
        return {path: f.content for path, f in commit.files.items()} if commit else {}

    def commit_count(self, repo_id: str, branch: str = "main") -> int:
        """Commits on a branch, the initial `.gitattributes` commit included."""
        return len(self.repos[repo_id].history(branch)) if repo_id in self.repos else 0

    # State changes (called with the lock held) -----------------------------------------------
    def _new_commit(
        self, repo: Repo, parent: Commit | None, files: dict[str, StoredFile], message: str
    ) -> Commit:
        digest = hashlib.sha1(
            f"{repo.repo_id}\n{parent.oid if parent else ''}\n{message}\n"
            f"{next(self._counter)}".encode()
        )
        for path in sorted(files):
            digest.update(f"{path}\0{files[path].oid}\n".encode())
        commit = Commit(digest.hexdigest(), files, message, parent.oid if parent else None)
        repo.commits[commit.oid] = commit
        return commit

    def _create_repo(self, repo_id: str, private: bool) -> Repo:
        repo = Repo(repo_id, private)
        gitattributes = "".join(
            f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES
        )
        first = self._new_commit(
            repo,
            None,
            {".gitattributes": StoredFile(gitattributes.encode(), False)},
            "initial commit",
        )
        repo.branches["main"] = first.oid
        self.repos[repo_id] = repo
        return repo


def _make_handler(server: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = (
            "HTTP/1.1"  # keep-alive, as the client expects; every answer sets Content-Length
        )

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (silence stderr access logs)
            return

        # Plumbing ----------------------------------------------------------------------------
        def _body(self) -> bytes:
            if getattr(self, "_cached_body", None) is None:
                self._cached_body = self._read_body()
            return self._cached_body

        def _read_body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                # File uploads may arrive chunked (the client streams a file object).
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _json_body(self) -> Any:
            body = self._body()
            try:
                return json.loads(body or b"{}")
            except json.JSONDecodeError as exc:
                raise HttpError(400, f"invalid JSON body: {exc}") from exc

        def _send(
            self,
            status: int,
            payload: Any = None,
            headers: dict[str, str] | None = None,
            raw: bytes | None = None,
            head: bool = False,
        ) -> None:
            body = (
                raw
                if raw is not None
                else (json.dumps(payload).encode() if payload is not None else b"")
            )
            self.send_response(status)
            sent = {k.lower() for k in (headers or {})}
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if "content-type" not in sent:
                self.send_header(
                    "Content-Type",
                    "application/json" if raw is None else "application/octet-stream",
                )
            if "content-length" not in sent:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _require_token(self) -> None:
            if (
                server.token is not None
                and self.headers.get("Authorization") != f"Bearer {server.token}"
            ):
                raise HttpError(401, "Invalid credentials in Authorization header", "Unauthorized")

        def _repo(self, repo_id: str) -> Repo:
            repo = server.repos.get(repo_id)
            if repo is None:
                raise HttpError(404, f"Repository Not Found for url: {self.path}.", "RepoNotFound")
            return repo

        def _commit(self, repo: Repo, revision: str) -> Commit:
            commit = repo.resolve(revision)
            if commit is None:
                raise HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            return commit

        def _dispatch(self, method: str) -> None:
            self._cached_body = None  # one handler serves every request of a keep-alive connection
            raw_path = urlsplit(self.path).path
            server.requests.append((method, raw_path))
            # Split before unquoting: a quoted revision such as refs%2Fpr%2F1 is one segment.
            parts = [unquote(p) for p in raw_path.strip("/").split("/")]
            try:
                with server._lock:
                    if not self._route(method, parts):
                        server.unhandled.append((method, raw_path))
                        raise HttpError(
                            404, f"no such endpoint in the Hub stand-in: {method} {raw_path}"
                        )
            except HttpError as exc:
                if method in ("POST", "PUT"):
                    self._body()  # drain (once), so the keep-alive connection stays usable
                headers = {"X-Error-Message": exc.message}
                if exc.code:
                    headers["X-Error-Code"] = exc.code
                self._send(
                    exc.status, {"error": exc.message, **exc.extra}, headers, head=method == "HEAD"
                )

        def do_GET(self) -> None:  # noqa: N802
            self._dispatch("GET")

        def do_HEAD(self) -> None:  # noqa: N802
            self._dispatch("HEAD")

        def do_POST(self) -> None:  # noqa: N802
            self._dispatch("POST")

        def do_PUT(self) -> None:  # noqa: N802
            self._dispatch("PUT")

        # Routes --------------------------------------------------------------------------------
        def _route(self, method: str, p: list[str]) -> bool:
            if method == "POST" and p == ["api", "repos", "create"]:
                return self._create_repo()
            if method == "POST" and p == ["api", "validate-yaml"]:
                return self._validate_yaml()
            if method == "GET" and len(p) == 4 and p[:2] == ["api", "organizations"]:
                # Importing bitsandbytes on a CPU with AVX512-BF16 asks (through `kernels`) whether
                # kernels-community is a trusted kernel publisher; the stand-in hosts no
                # organization, so it answers as the Hub does for an unknown one.
                raise HttpError(404, f"Organization {p[2]} not found", "OrganizationNotFound")
            if len(p) >= 4 and p[:2] == ["api", "models"]:
                repo_id, rest = f"{p[2]}/{p[3]}", p[4:]
                if method == "GET" and (rest == [] or (len(rest) == 2 and rest[0] == "revision")):
                    return self._repo_info(repo_id, rest[1] if rest else "main")
                if method == "POST" and len(rest) == 2 and rest[0] == "preupload":
                    return self._preupload(repo_id, rest[1])
                if method == "POST" and len(rest) == 2 and rest[0] == "commit":
                    return self._commit_files(repo_id, rest[1])
                if method == "POST" and len(rest) == 2 and rest[0] == "branch":
                    return self._create_branch(repo_id, rest[1])
                if method == "GET" and len(rest) >= 2 and rest[0] == "tree":
                    return self._tree(repo_id, rest[1], "/".join(rest[2:]))
                return False
            if (
                method == "POST"
                and len(p) == 6
                and p[1].endswith(".git")
                and p[2:] == ["info", "lfs", "objects", "batch"]
            ):
                return self._lfs_batch(f"{p[0]}/{p[1][: -len('.git')]}")
            if method == "PUT" and len(p) == 2 and p[0] == "lfs-upload":
                return self._lfs_put(p[1])
            if method in ("GET", "HEAD") and len(p) >= 5 and p[2] == "resolve":
                return self._resolve(f"{p[0]}/{p[1]}", p[3], "/".join(p[4:]), head=method == "HEAD")
            return False

        def _create_repo(self) -> bool:
            self._require_token()
            body = self._json_body()
            name, organization = body.get("name"), body.get("organization")
            if not name or not organization:
                raise HttpError(400, "a repo id must be `namespace/name` in the Hub stand-in")
            repo_id = f"{organization}/{name}"
            if repo_id in server.repos:
                # The Hub answers with the repo's url, which create_repo(exist_ok=True) returns.
                raise HttpError(
                    409,
                    "You already created this model repo",
                    "RepoExists",
                    url=f"{server.url}/{repo_id}",
                )
            private = body.get("visibility") == "private" or bool(body.get("private"))
            server._create_repo(repo_id, private)
            self._send(200, {"url": f"{server.url}/{repo_id}", "name": repo_id, "id": repo_id})
            return True

        def _validate_yaml(self) -> bool:
            body = self._json_body()
            errors = card_metadata_errors(body.get("content", ""))
            if errors:
                self._send(400, {"errors": [{"message": e} for e in errors], "warnings": []})
            else:
                self._send(200, {"errors": [], "warnings": []})
            return True

        def _repo_info(self, repo_id: str, revision: str) -> bool:
            repo = self._repo(repo_id)
            commit = self._commit(repo, revision)
            siblings = [{"rfilename": path} for path in sorted(commit.files)]
            self._send(
                200,
                {
                    "id": repo_id,
                    "modelId": repo_id,
                    "sha": commit.oid,
                    "private": repo.private,
                    "siblings": siblings,
                    "tags": [],
                },
            )
            return True

        def _create_branch(self, repo_id: str, branch: str) -> bool:
            self._require_token()
            repo = self._repo(repo_id)
            body = self._json_body()
            if branch in repo.branches:
                raise HttpError(409, f"Reference already exists: {branch}", "BranchExists")
            repo.branches[branch] = self._commit(repo, body.get("startingPoint") or "main").oid
            self._send(200, {})
            return True

        def _preupload(self, repo_id: str, revision: str) -> bool:
            self._require_token()
            repo = self._repo(repo_id)
            existing = repo.resolve(revision)
            answers = []
            for entry in self._json_body().get("files", []):
                path, size = entry["path"], int(entry["size"])
                lfs = path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE
                stored = existing.files.get(path) if existing else None
                answers.append(
                    {
                        "path": path,
                        "uploadMode": "lfs" if lfs else "regular",
                        "shouldIgnore": False,
                        "oid": stored.oid if stored is not None else None,
                    }
                )
            self._send(200, {"files": answers, "commitOid": existing.oid if existing else None})
            return True

        def _lfs_batch(self, repo_id: str) -> bool:
            self._require_token()
            self._repo(repo_id)
            body = self._json_body()
            if body.get("operation") != "upload":
                raise HttpError(400, "the Hub stand-in's LFS batch API only handles uploads")
            objects = []
            for obj in body.get("objects", []):
                oid, size = obj["oid"], int(obj["size"])
                answer: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
                if (
                    oid not in server.lfs_objects
                ):  # no actions = already stored, the client skips it
                    answer["actions"] = {
                        "upload": {"href": f"{server.url}/lfs-upload/{oid}", "header": {}}
                    }
                objects.append(answer)
            self._send(
                200,
                {"transfer": "basic", "objects": objects},
                {"Content-Type": "application/vnd.git-lfs+json"},
            )
            return True

        def _lfs_put(self, oid: str) -> bool:
            content = self._body()
            if hashlib.sha256(content).hexdigest() != oid:
                raise HttpError(400, f"LFS object {oid} does not match its content's sha256")
            server.lfs_objects[oid] = content
            self._send(200, {})
            return True

        def _commit_files(self, repo_id: str, revision: str) -> bool:
            self._require_token()
            repo = self._repo(repo_id)
            lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
            if repo_id in server.fail_commit:
                raise HttpError(
                    server.fail_commit[repo_id],
                    "Internal Error - the Hub stand-in was told to fail this commit",
                )
            if revision not in repo.branches:
                raise HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            parent = repo.resolve(revision)
            files = dict(parent.files) if parent else {}
            header: dict[str, Any] = {}
            for line in lines:
                key, value = line.get("key"), line.get("value", {})
                if key == "header":
                    header = value
                elif key == "file":
                    files[value["path"]] = StoredFile(base64.b64decode(value["content"]), lfs=False)
                elif key == "lfsFile":
                    content = server.lfs_objects.get(value["oid"])
                    if content is None:
                        raise HttpError(
                            400, f"LFS object {value['oid']} of {value['path']} was never uploaded"
                        )
                    files[value["path"]] = StoredFile(content, lfs=True)
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {k: v for k, v in files.items() if not k.startswith(prefix)}
                else:
                    raise HttpError(400, f"unknown commit operation {key!r} in the Hub stand-in")
            if (
                header.get("parentCommit")
                and parent is not None
                and header["parentCommit"] != parent.oid
            ):
                raise HttpError(412, "parentCommit is not the head of the branch")
            commit = server._new_commit(repo, parent, files, header.get("summary", ""))
            repo.branches[revision] = commit.oid
            self._send(
                200,
                {
                    "success": True,
                    "commitOid": commit.oid,
                    "commitUrl": f"{server.url}/{repo_id}/commit/{commit.oid}",
                    "hookOutput": "",
                },
            )
            return True

        def _tree(self, repo_id: str, revision: str, folder: str) -> bool:
            commit = self._commit(self._repo(repo_id), revision)
            prefix = folder.rstrip("/") + "/" if folder else ""
            entries = [
                {
                    "type": "file",
                    "path": path,
                    "size": len(f.content),
                    "oid": git_blob_oid(f.content),
                    **(
                        {"lfs": {"oid": f.sha256, "size": len(f.content), "pointerSize": 134}}
                        if f.lfs
                        else {}
                    ),
                }
                for path, f in sorted(commit.files.items())
                if path.startswith(prefix) and "/" not in path[len(prefix) :]
            ]
            if folder and not entries:
                raise HttpError(404, f"{folder} does not exist on {revision}", "EntryNotFound")
            self._send(200, entries)
            return True

        def _resolve(self, repo_id: str, revision: str, path: str, head: bool) -> bool:
            commit = self._commit(self._repo(repo_id), revision)
            stored = commit.files.get(path)
            if stored is None:
                raise HttpError(404, f"Entry not found: {path}", "EntryNotFound")
            headers = {
                "X-Repo-Commit": commit.oid,
                "ETag": f'"{git_blob_oid(stored.content)}"',
                "Content-Length": str(len(stored.content)),
            }
            if stored.lfs:
                # Like the Hub: the LFS object's sha256 is the linked ETag the client caches by.
                headers["X-Linked-Etag"] = f'"{stored.sha256}"'
                headers["X-Linked-Size"] = str(len(stored.content))
            self._send(200, headers=headers, raw=stored.content, head=head)
            return True

    return Handler


def card_metadata_errors(content: str) -> list[str]:
    """Offline approximation of the Hub's README.md metadata validation (`/api/validate-yaml`).

    Checks what the Hub rejects and what this project writes: the YAML block parses to a mapping,
    `model-index` parses into eval results, `base_model` is a Hub id, `base_model_relation` is one
    of the four values the Hub accepts (and needs a `base_model`), `tags` / `datasets` are lists of
    strings.
    """
    from huggingface_hub import ModelCardData

    match = re.match(r"^\s*---\r?\n(.*?)\r?\n---\s*(\r?\n|$)", content, re.DOTALL)
    if not match:
        return []  # no metadata is allowed (the Hub only warns)
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        return [f"YAML metadata does not parse: {exc}"]
    if meta is None:
        return []
    if not isinstance(meta, dict):
        return ["YAML metadata must be a mapping"]
    errors = []
    try:
        ModelCardData(**meta)
    except (ValueError, TypeError, KeyError) as exc:
        errors.append(f"model-index is invalid: {exc}")
    base = meta.get("base_model")
    bases = base if isinstance(base, list) else [base] if base is not None else []
    errors += [
        f"base_model {b!r} is not a valid model id"
        for b in bases
        if not (isinstance(b, str) and _HUB_ID.match(b))
    ]
    relation = meta.get("base_model_relation")
    if relation is not None and relation not in BASE_MODEL_RELATIONS:
        errors.append(
            f"base_model_relation must be one of {BASE_MODEL_RELATIONS}, got {relation!r}"
        )
    if relation is not None and not bases:
        errors.append("base_model_relation needs base_model")
    for key in ("tags", "datasets"):
        value = meta.get(key)
        if value is not None and not (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            errors.append(f"{key} must be a list of strings")
    return errors


# A sample hf-compress output, for the hub and model-card tests ---------------------------------
SAMPLE_TASK_METRIC = "accuracy"
SAMPLE_RECIPE = """\
base_model: sentence-transformers/all-MiniLM-L6-v2
task: sst2
teacher: finetuned-base
finetune_base: {epochs: 1}
data: {max_train_samples: 20000, max_seq_length: 64}
stages:
  - name: prune
    epochs: 2
    modifiers:
      - {type: ffn_pruning, sparsity: 0.5}
      - {type: distillation, temperature: 2.0}
  - name: quantize
    epochs: 0
    modifiers:
      - {type: quantization, method: int8_dynamic}
output_dir: outputs/minilm-sst2-small
"""


def sample_report(repo_id: str | None = None) -> dict[str, Any]:
    """A report.json in the schema the runner writes (numbers made up, shaped like a MiniLM run)."""
    latency = {
        "1": {"median": 9.12, "p10": 8.8, "p90": 9.9, "runs": 20},
        "32": {"median": 640.2, "p10": 630.0, "p90": 660.5, "runs": 20},
    }
    fast = {
        "1": {"median": 4.25, "p10": 4.0, "p90": 4.6, "runs": 20},
        "32": {"median": 280.7, "p10": 275.0, "p90": 290.0, "runs": 20},
    }
    return {
        "hf_compress_version": "0.1.0",
        "task": "sst2",
        "metric_name": SAMPLE_TASK_METRIC,
        "base_model": "sentence-transformers/all-MiniLM-L6-v2",
        "base_license": None,
        "output_dir": "outputs/minilm-sst2-small",
        "repo_id": repo_id,
        "environment": {
            "cpu": "Test CPU @ 2.0GHz",
            "cpu_count": 2,
            "threads": 2,
            "torch": "2.13.0+cpu",
            "transformers": "5.24.0",
            "python": "3.11.9",
        },
        "latency_config": {"seq_len": 128, "batch_sizes": [1, 32], "runs": 20, "warmup": 3},
        "baseline": {
            "name": "fine-tuned base",
            "metrics": {"accuracy": 0.8922, "eval_loss": 0.31, "eval_samples": 872},
            "num_parameters": 22713602,
            "nonzero_parameters": 22713602,
            "size_bytes": 90867720,
            "latency_ms": latency,
        },
        "compressed": {
            "name": "compressed",
            "metrics": {"accuracy": 0.8761, "eval_loss": 0.36, "eval_samples": 872},
            "num_parameters": 17068034,
            "nonzero_parameters": 17068034,
            "size_bytes": 30112345,
            "latency_ms": fast,
            "methods": ["ffn_pruning", "int8_dynamic"],
        },
        "stages": [
            {
                "name": "prune",
                "epochs": 2.0,
                "modifiers": [
                    {"type": "ffn_pruning", "sparsity": 0.5, "kept_neurons": 768},
                    {"type": "distillation", "temperature": 2.0, "final_kd_loss": 0.1234},
                ],
            },
            {
                "name": "quantize",
                "epochs": 0.0,
                "modifiers": [
                    {"type": "quantization", "method": "int8_dynamic", "quantized_linears": 36}
                ],
            },
        ],
        "notes": ["int8 dynamic quantization runs on CPU only."],
        "compression_time_s": 1234.5,
    }


SAMPLE_STRUCTURE_KEY = "test_hub_ffn_width"


def register_sample_rebuilder() -> None:
    """Registers the rebuilder of the sample model's FFN narrowing (a stand-in for a real
    technique)."""
    from torch import nn

    from hf_compress.checkpoint.rebuild import register_rebuild

    @register_rebuild(SAMPLE_STRUCTURE_KEY, 40)
    def _narrow_ffn(model: Any, widths: dict[str, int]) -> None:
        for index, width in widths.items():
            layer = model.bert.encoder.layer[int(index)]
            hidden = layer.intermediate.dense.in_features
            layer.intermediate.dense = nn.Linear(hidden, width)
            layer.output.dense = nn.Linear(width, hidden)


def write_sample_output(directory: Any, repo_id: str | None = None) -> Any:
    """Writes a complete compressed output: a tiny BERT whose layer 0 FFN is narrowed (recorded in
    `compression_config`, so it saves as `compressed_bert`), tokenizer, recipe.yaml, report.json
    and the generated model card. Returns the in-memory model."""
    import json
    import sys
    from pathlib import Path

    import torch
    from transformers.pytorch_utils import prune_linear_layer

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tiny import tiny_model, tiny_tokenizer

    from hf_compress.checkpoint.format import record_method, record_structure
    from hf_compress.hub.model_card import write_model_card

    directory = Path(directory)
    model = tiny_model("bert")
    layer = model.bert.encoder.layer[0]
    keep = torch.arange(40)
    layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, keep, dim=0)
    layer.output.dense = prune_linear_layer(layer.output.dense, keep, dim=1)
    record_structure(model, SAMPLE_STRUCTURE_KEY, {"0": 40})
    record_method(model, "ffn_pruning")
    model.save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    report = sample_report(repo_id)
    (directory / "recipe.yaml").write_text(SAMPLE_RECIPE, encoding="utf-8")
    (directory / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_model_card(directory, report, SAMPLE_RECIPE)
    return model
