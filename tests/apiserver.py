"""A small Kubernetes API server on loopback: a real HTTP peer for the real kubernetes client.

It speaks just enough of the API for `nexus deploy` and `nexus cluster-status`: discovery,
server-side apply (PATCH application/apply-patch+yaml, dryRun=All), get, list with equality
label and field selectors, delete, and Status objects for errors. It keeps what is applied in
memory and records every request, so tests assert on what the client really sent. Deployment
status is made up per name from ``rollout`` (available, progressing, stuck); pods and events
are whatever a test puts in ``pods`` and ``events``. Modes: ``forbid`` answers 403 to every
resource request (discovery still works, as RBAC allows it for everyone), ``unauthorized``
answers 401 to everything.
"""

from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

# (group/version, kind, plural, namespaced)
RESOURCES = (
    ("v1", "Namespace", "namespaces", False),
    ("v1", "ServiceAccount", "serviceaccounts", True),
    ("v1", "ConfigMap", "configmaps", True),
    ("v1", "Service", "services", True),
    ("v1", "Pod", "pods", True),
    ("v1", "Event", "events", True),
    ("apps/v1", "Deployment", "deployments", True),
    ("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True),
    ("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", True),
    ("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", True),
)
KIND_OF = {(gv, plural): kind for gv, kind, plural, _ in RESOURCES}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any = None


@dataclass
class FakeApiServer:
    forbid: bool = False
    unauthorized: bool = False
    store: dict[tuple[str, str, str, str], dict[str, Any]] = field(default_factory=dict)  # (gv, plural, ns, name)
    requests: list[Request] = field(default_factory=list)
    rollout: dict[str, str] = field(default_factory=dict)  # Deployment name -> available | progressing | stuck
    pods: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    applied: threading.Event = field(default_factory=threading.Event)  # set on each apply that is not a dry run
    _version: int = 0

    def __enter__(self) -> FakeApiServer:
        server = self

        class Handler(_Handler):
            api = server

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def kubeconfig(self, path: Path, context: str = "fake") -> Path:
        path.write_text(kubeconfig(self.url, context))
        return path

    def applies(self) -> list[Request]:
        return [r for r in self.requests if r.method == "PATCH"]

    def live(self, kind: str, name: str) -> dict[str, Any] | None:
        return next((o for (gv, plural, _, n), o in self.store.items() if KIND_OF[(gv, plural)] == kind and n == name), None)


def kubeconfig(server: str, context: str = "fake") -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": server}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": context, "context": {"cluster": "c", "user": "u"}}],
            "current-context": context,
        }
    )


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}


def _matches(obj: dict[str, Any], labels: str | None, fields: str | None) -> bool:
    have = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, (labels or "").split(",")):
        key, _, value = term.partition("=")
        if have.get(key) != value:
            return False
    for term in filter(None, (fields or "").split(",")):
        key, _, value = term.partition("=")
        node: Any = obj
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node != value:
            return False
    return True


class _Handler(BaseHTTPRequestHandler):
    api: FakeApiServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _send(self, code: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = yaml.safe_load(raw) if raw else None
        api = self.api
        api.requests.append(Request(method, url.path, query, self.headers.get("Content-Type", ""), body))
        if api.unauthorized:
            return self._send(401, _status(401, "Unauthorized", "Unauthorized"))
        discovery = _discovery(url.path.rstrip("/"))
        if discovery is not None:
            return self._send(200, discovery)
        target = _parse(url.path)
        if target is None:
            return self._send(404, _status(404, "NotFound", f"the server could not find the requested resource ({url.path})"))
        gv, plural, ns, name = target
        if api.forbid:
            verb = {"PATCH": "patch", "DELETE": "delete", "GET": "get" if name else "list"}.get(method, method.lower())
            group = gv.rpartition("/")[0]
            scope = f'in the namespace "{ns}"' if ns else "at the cluster scope"
            res = f"{plural}.{group}" if group else plural
            message = f'{res} "{name}" is forbidden: User "dev" cannot {verb} resource "{plural}" in API group "{group}" {scope}'
            return self._send(403, _status(403, "Forbidden", message))
        if method == "PATCH":
            return self._send(200, self._apply(gv, plural, ns, name, body, query))
        if method == "GET" and name:
            obj = api.store.get((gv, plural, ns, name))
            if obj is None:
                return self._send(404, _status(404, "NotFound", f'{plural} "{name}" not found'))
            return self._send(200, self._with_status(obj))
        if method == "GET":
            kind = KIND_OF[(gv, plural)]
            pool = {"pods": api.pods, "events": api.events}.get(plural) or [
                self._with_status(o) for (g, p, n, _), o in sorted(api.store.items()) if (g, p) == (gv, plural) and n == ns
            ]
            items = [o for o in pool if o["metadata"].get("namespace", ns) == ns and _matches(o, query.get("labelSelector"), query.get("fieldSelector"))]
            return self._send(200, {"kind": f"{kind}List", "apiVersion": gv, "metadata": {"resourceVersion": str(api._version)}, "items": items})
        if method == "DELETE":
            if query.get("dryRun") != "All":
                api.store.pop((gv, plural, ns, name), None)
            return self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}})
        return self._send(405, _status(405, "MethodNotAllowed", method))

    def _apply(self, gv: str, plural: str, ns: str, name: str, body: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
        api = self.api
        old = api.store.get((gv, plural, ns, name))
        api._version += 1
        new = copy.deepcopy(body)
        if new.get("kind") == "Deployment":
            new["spec"].setdefault("replicas", 1)  # the API server's defaulting
        meta = new.setdefault("metadata", {})
        meta["uid"] = old["metadata"].get("uid", "uid-0") if old else f"uid-{api._version}"
        meta["creationTimestamp"] = "2025-01-01T00:00:00Z"
        meta["resourceVersion"] = str(api._version)
        changed = old is None or old.get("spec") != new.get("spec")
        meta["generation"] = (old["metadata"].get("generation", 1) if old else 0) + (1 if changed else 0)
        meta["managedFields"] = [{"manager": query.get("fieldManager"), "operation": "Apply"}]
        if query.get("dryRun") != "All":
            api.store[(gv, plural, ns, name)] = new
            api.applied.set()
        return self._with_status(new)

    def _with_status(self, obj: dict[str, Any]) -> dict[str, Any]:
        if obj.get("kind") != "Deployment":
            return obj
        name, gen = obj["metadata"]["name"], obj["metadata"]["generation"]
        want = obj["spec"].get("replicas", 1)
        mode = self.api.rollout.get(name, "available")
        up = mode == "available"
        status: dict[str, Any] = {"observedGeneration": gen, "replicas": want, "updatedReplicas": want, "readyReplicas": want if up else 0}
        if up:
            status["availableReplicas"] = want
        else:
            status["unavailableReplicas"] = want
        progress = (
            ("True", "NewReplicaSetAvailable", f'ReplicaSet "{name}-5d9" has successfully progressed.')
            if up
            else ("True", "ReplicaSetUpdated", f'ReplicaSet "{name}-5d9" is progressing.')
            if mode == "progressing"
            else ("False", "ProgressDeadlineExceeded", f'ReplicaSet "{name}-5d9" has timed out progressing.')
        )
        status["conditions"] = [
            {"type": "Available", "status": "True" if up else "False", "reason": "MinimumReplicasAvailable" if up else "MinimumReplicasUnavailable",
             "message": "Deployment has minimum availability." if up else "Deployment does not have minimum availability."},
            {"type": "Progressing", "status": progress[0], "reason": progress[1], "message": progress[2]},
        ]
        return {**obj, "status": status}

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")


def _discovery(path: str) -> dict[str, Any] | None:
    if path == "/version":
        return {
            "major": "1", "minor": "32", "gitVersion": "v1.32.0-fake", "gitCommit": "0" * 40, "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.23", "compiler": "gc", "platform": "linux/amd64",
        }
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
    groups = sorted({gv for gv, *_ in RESOURCES if "/" in gv})
    if path == "/apis":
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {"name": gv.split("/")[0], "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}], "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]}}
                for gv in groups
            ],
        }
    gv = "v1" if path == "/api/v1" else path.removeprefix("/apis/") if path.startswith("/apis/") and path.count("/") == 3 else None
    if gv is None or gv not in {g for g, *_ in RESOURCES}:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": [
            {"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind, "verbs": VERBS}
            for g, kind, plural, namespaced in RESOURCES
            if g == gv
        ],
    }


def _parse(path: str) -> tuple[str, str, str, str] | None:
    """A resource path -> (group/version, plural, namespace, name); "" for what is absent."""
    parts = path.strip("/").split("/")
    if parts[0] == "api" and len(parts) >= 3:
        gv, rest = parts[1], parts[2:]
    elif parts[0] == "apis" and len(parts) >= 4:
        gv, rest = f"{parts[1]}/{parts[2]}", parts[3:]
    else:
        return None
    if rest[0] == "namespaces" and len(rest) >= 3:
        ns, plural, name = rest[1], rest[2], rest[3] if len(rest) > 3 else ""
    else:
        ns, plural, name = "", rest[0], rest[1] if len(rest) > 1 else ""
    return (gv, plural, ns, name) if (gv, plural) in KIND_OF else None
