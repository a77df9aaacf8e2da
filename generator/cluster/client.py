"""The cluster boundary: kubeconfig, the kubernetes client, and the translation of its errors.

Everything that talks to a cluster goes through `Cluster`, and every call it makes runs inside
`Cluster.talking`, which turns the client's exceptions (ApiException and its dynamic-client
subclasses, urllib3's connection errors, ConfigException) into one-line ClusterErrors that name
the context and the fix. Objects are applied with the dynamic client (any kind the overlay has,
server-side apply, field manager ``nexus``); Deployments, pods and events are read with the
typed API, so the rollout logic works on the client's own models.
"""

from __future__ import annotations

import json
import os
import re
import ssl
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pydantic
import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.discovery import LazyDiscoverer
from kubernetes.dynamic.exceptions import (
    ConflictError,
    NotFoundError,
    ResourceNotFoundError,
    ResourceNotUniqueError,
)

from ..errors import (
    ApplyError,
    CertificateError,
    ClusterError,
    ForbiddenError,
    KubeconfigError,
    NamespaceTerminatingError,
    UnauthorizedError,
    UnreachableError,
)

FIELD_MANAGER = "nexus"
REQUEST_TIMEOUT = (10, 60)  # (connect, read) seconds for each API call


def name_of(obj: Any) -> str:
    """A kubernetes client object's name ("" for one without metadata, which the API never sends)."""
    return str(obj.metadata.name) if obj.metadata is not None and obj.metadata.name is not None else ""


def kubeconfig_files() -> str:
    """What the kubernetes client reads: $KUBECONFIG (``:``-separated) or ~/.kube/config."""
    return os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())


def connect(context: str | None = None) -> Cluster:
    """Load the kubeconfig for ``context`` (its current context if None). Talks to no server yet."""
    files = kubeconfig_files()
    if not any(Path(f).expanduser().is_file() for f in files.split(os.pathsep) if f):
        where = (
            f"KUBECONFIG={files}"
            if os.environ.get("KUBECONFIG")
            else f"{files} does not exist and KUBECONFIG is not set"
        )
        raise KubeconfigError(
            f"no kubeconfig ({where}): create a cluster (`kind create cluster --name nexus`) "
            "or point KUBECONFIG at one; `--dry-run=client` needs no cluster"
        )
    try:
        contexts, current = config.list_kube_config_contexts(config_file=files)
        names = sorted(c["name"] for c in contexts or [])
        name = context or (current or {}).get("name")
    except (*_UNREADABLE, *_MISSHAPEN) as exc:
        raise KubeconfigError(
            f"kubeconfig {files} cannot be read: {_unreadable(exc)}; fix it or regenerate it (`kind export kubeconfig`)"
        ) from exc
    if not name:
        raise KubeconfigError(
            f"kubeconfig {files} sets no current-context; pass --context (it has: {', '.join(names) or 'none'})"
        )
    if name not in names:
        raise KubeconfigError(
            f'context "{name}" is not in kubeconfig {files} (it has: {", ".join(names) or "none"}); '
            "pass one of those with --context (`kubectl config get-contexts` lists them)"
        )
    try:
        api = config.new_client_from_config(config_file=files, context=name, persist_config=False)
    except (*_UNREADABLE, *_MISSHAPEN) as exc:
        raise KubeconfigError(
            f'context "{name}" in kubeconfig {files} cannot be used: {_unreadable(exc)}; fix it or regenerate it'
        ) from exc
    return Cluster(name, api)


# what the kubernetes client's loader raises for a kubeconfig it cannot use: its own errors, and
# PyYAML's for a file that is not YAML
_UNREADABLE = (ConfigException, OSError, ValueError, yaml.YAMLError)
# and what it raises, unwrapped, reading YAML of another shape (a list, a context that is a string)
_MISSHAPEN = (TypeError, KeyError, AttributeError, IndexError)


def _unreadable(exc: BaseException) -> str:
    """Why a kubeconfig could not be used, on one line."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"not YAML: {exc.problem} at line {mark.line + 1}, column {mark.column + 1}"
    if isinstance(exc, _MISSHAPEN):
        return "YAML, but not the mapping of clusters, contexts and users a kubeconfig is"
    return " ".join(str(exc).split())


@dataclass
class Cluster:
    """One context's API server. Every method may raise a ClusterError, never a client exception."""

    context: str
    api: client.ApiClient

    @property
    def host(self) -> str:
        return str(self.api.configuration.host)

    @contextmanager
    def talking(self, verb: str, what: str, namespace: str | None = None) -> Iterator[None]:
        """Translate the client's errors raised inside into ClusterErrors naming this context."""
        ctx = f'context "{self.context}"'
        try:
            yield
        except ApiException as exc:
            status, message = exc.status, _status_message(exc)
            if status == 0:  # the client's own code for a TLS failure
                raise CertificateError(self._untrusted(message)) from exc
            if status == 401:
                raise UnauthorizedError(
                    f"the API server of {ctx} rejected its credentials (401 Unauthorized); "
                    "refresh them (kind: `kind export kubeconfig --name <cluster>`) and retry"
                ) from exc
            if status == 403 and _cause(exc, "NamespaceTerminating"):
                # NamespaceLifecycle admission, not RBAC: no Role would help, only waiting
                ns = namespace or "the namespace"
                raise NamespaceTerminatingError(
                    f'namespace "{ns}" in {ctx} is being deleted, so nothing can be created in it ({message}); '
                    f"wait until it is gone (`kubectl --context {self.context} wait --for=delete namespace/{ns} "
                    "--timeout=120s`) and run again"
                ) from exc
            if status == 403:
                where = f" -n {namespace}" if namespace else ""
                raise ForbiddenError(
                    f"forbidden in {ctx}: {message}; ask for a Role or ClusterRole that allows it "
                    f"(check: `kubectl --context {self.context} auth can-i {verb} {what}{where}`)"
                ) from exc
            raise ApplyError(f"{verb} {what} in {ctx} failed ({status} {exc.reason}): {message}") from exc
        except pydantic.ValidationError as exc:  # the client's models are pydantic: an answer it cannot read
            raise ClusterError(
                f"the API server of {ctx} at {self.host} sent a {what} answer the kubernetes client cannot read: "
                f"{_first_error(exc)}"
            ) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            tls = _tls_failure(exc)
            if tls is not None:
                raise CertificateError(self._untrusted(_reason(tls))) from exc
            raise UnreachableError(
                f"cannot reach the API server of {ctx} at {self.host} ({_reason(exc)}); "
                f"is the cluster running? (`kubectl --context {self.context} cluster-info`; kind: `kind get clusters`)"
            ) from exc

    def _untrusted(self, why: str) -> str:
        return (
            f'the API server of context "{self.context}" at {self.host} answered, but the TLS handshake failed '
            f"({why}): "
            "the kubeconfig's certificate-authority does not match the server's certificate; "
            "regenerate the kubeconfig from the cluster (kind: `kind export kubeconfig --name <cluster>`) or fix its CA"
        )

    @cached_property
    def dynamic(self) -> DynamicClient:
        with self.talking("get", "/apis"):  # discovery; `auth can-i get /apis` is how to check it
            return DynamicClient(self.api, cache_file=_NO_CACHE_FILE, discoverer=_InMemoryDiscoverer)

    def rediscover(self) -> None:
        """Forget what discovery found, so kinds defined since (CRDs just applied) are seen."""
        self.__dict__.pop("dynamic", None)

    def resource(self, api_version: str, kind: str) -> Any:
        """The dynamic client's resource for a kind; ApplyError if the server does not serve it."""
        with self.talking("get", "/apis"):
            try:
                return self.dynamic.resources.get(api_version=api_version, kind=kind)
            except (ResourceNotFoundError, ResourceNotUniqueError) as exc:
                raise ApplyError(
                    f'the API server of context "{self.context}" does not serve {kind} in {api_version}; '
                    "install its CustomResourceDefinition, or use a cluster that has that API version"
                ) from exc

    def missing(self, kinds: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """The (apiVersion, kind) pairs the server does not serve: all of them, in one pass."""
        out = []
        for api_version, kind in sorted(set(kinds)):
            try:
                self.resource(api_version, kind)
            except ApplyError:
                out.append((api_version, kind))
        return out

    def check(self) -> str:
        """Ask the server its version: the cheapest proof that it answers and accepts us."""
        with self.talking("get", "/version"):
            info = client.VersionApi(self.api).get_code(_request_timeout=REQUEST_TIMEOUT)
        return str(info.git_version)

    def apply(self, body: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply as field manager ``nexus``, taking over fields others changed."""
        res = self.resource(body["apiVersion"], body["kind"])
        meta = body["metadata"]
        extra = {"dry_run": "All"} if dry_run else {}
        with self.talking("patch", _what(res), meta.get("namespace")):
            out = self.dynamic.server_side_apply(
                res,
                body=body,
                namespace=meta.get("namespace"),
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
                _request_timeout=REQUEST_TIMEOUT,
                serializer=_plain,
                **extra,
            )
        return dict(out)

    def get(self, api_version: str, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        """The live object, or None if there is none."""
        res = self.resource(api_version, kind)
        with self.talking("get", _what(res), namespace):
            try:
                return dict(
                    res.get(name=name, namespace=namespace, _request_timeout=REQUEST_TIMEOUT, serializer=_plain)
                )
            except NotFoundError:
                return None

    def labelled(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Objects of a kind matching a label selector, in ``namespace`` if the kind is namespaced."""
        res = self.resource(api_version, kind)
        with self.talking("list", _what(res), namespace):
            found = res.get(
                namespace=namespace if res.namespaced else None,
                label_selector=selector,
                _request_timeout=REQUEST_TIMEOUT,
                serializer=_plain,
            )
        # items of a list carry neither apiVersion nor kind
        return [{"apiVersion": api_version, "kind": kind, **item} for item in found.get("items") or []]

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None, *, dry_run: bool = False) -> None:
        res = self.resource(api_version, kind)
        extra = {"dry_run": "All"} if dry_run else {}
        with self.talking("delete", _what(res), namespace):
            res.delete(
                name=name,
                namespace=namespace,
                propagation_policy="Background",
                _request_timeout=REQUEST_TIMEOUT,
                **extra,
            )

    def deployments(self, namespace: str, selector: str | None = None) -> dict[str, client.V1Deployment]:
        """The namespace's Deployments (those matching ``selector``), by name, as the client's models."""
        with self.talking("list", "deployments.apps", namespace):
            found = client.AppsV1Api(self.api).list_namespaced_deployment(
                namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT
            )
        return {name_of(d): d for d in found.items}

    def statefulsets(self, namespace: str) -> dict[str, client.V1StatefulSet]:
        """The namespace's StatefulSets by name, as the client's models."""
        with self.talking("list", "statefulsets.apps", namespace):
            found = client.AppsV1Api(self.api).list_namespaced_stateful_set(namespace, _request_timeout=REQUEST_TIMEOUT)
        return {name_of(s): s for s in found.items}

    def jobs(self, namespace: str) -> dict[str, client.V1Job]:
        """The namespace's Jobs by name, as the client's models."""
        with self.talking("list", "jobs.batch", namespace):
            found = client.BatchV1Api(self.api).list_namespaced_job(namespace, _request_timeout=REQUEST_TIMEOUT)
        return {name_of(j): j for j in found.items}

    def create(self, body: dict[str, Any], *, dry_run: bool = False) -> bool:
        """Create an object unless one of its name exists (False then: it is left as it is)."""
        res = self.resource(body["apiVersion"], body["kind"])
        meta = body["metadata"]
        extra = {"dry_run": "All"} if dry_run else {}
        with self.talking("create", _what(res), meta.get("namespace")):
            try:
                res.create(body=body, namespace=meta.get("namespace"), _request_timeout=REQUEST_TIMEOUT, **extra)
            except ConflictError:  # made meanwhile by someone else: theirs stands
                return False
        return True

    def pods(self, namespace: str, selector: str) -> list[client.V1Pod]:
        with self.talking("list", "pods", namespace):
            return list(
                client.CoreV1Api(self.api)
                .list_namespaced_pod(namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT)
                .items
            )

    def events(self, namespace: str, name: str) -> list[client.CoreV1Event]:
        """Events about the object called ``name`` (a pod, a ReplicaSet, a Deployment)."""
        with self.talking("list", "events", namespace):
            return list(
                client.CoreV1Api(self.api)
                .list_namespaced_event(
                    namespace, field_selector=f"involvedObject.name={name}", _request_timeout=REQUEST_TIMEOUT
                )
                .items
            )


def _plain(_client: object, data: dict[str, Any]) -> dict[str, Any]:
    """The dynamic client's answers as parsed JSON: its ResourceInstance wraps every nested field
    in an object, which ``to_dict`` then unwraps again; for 1,000 objects that was most of
    `cluster-status --overlay`'s time."""
    return data


class _InMemoryDiscoverer(LazyDiscoverer):
    """Discovery kept for one run only: a few requests, and no file left in /tmp per API server
    (the client's default) that could hide a CustomResourceDefinition installed since."""

    def _write_cache(self) -> None:
        pass


_NO_CACHE_FILE = os.path.join(os.path.dirname(__file__), "__no_discovery_cache__.json")  # never written, so never read


def _what(res: Any) -> str:
    """A resource as `kubectl auth can-i` spells it: deployments.apps, configmaps."""
    return f"{res.name}.{res.group}" if res.group else str(res.name)


def _status_message(exc: ApiException) -> str:
    """The message of the Status object the API server sent, or the HTTP reason."""
    try:
        message = json.loads(exc.body or "")["message"]
    except (ValueError, KeyError, TypeError):
        return str(exc.reason or "no reason given")
    return str(message)


def _cause(exc: ApiException, kind: str) -> bool:
    """Whether the Status the server sent lists a cause of this type (NamespaceTerminating, ...)."""
    try:
        causes = json.loads(exc.body or "").get("details", {}).get("causes") or []
    except (ValueError, AttributeError):
        return False
    return any(isinstance(c, dict) and c.get("reason") == kind for c in causes)  # a cause's type is sent as "reason"


def _tls_failure(exc: BaseException) -> BaseException | None:
    """The ssl error behind a urllib3 failure (a certificate the client does not trust), if any."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ssl.SSLError | urllib3.exceptions.SSLError):
            return e
        todo += [
            getattr(e, "reason", None),
            e.__cause__,
            e.__context__,
            *(a for a in e.args if isinstance(a, BaseException)),
        ]
    return None


def _reason(exc: BaseException) -> str:
    """'connection refused', 'timed out', 'name or service not known': the root cause, briefly."""
    while isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    args = exc.args
    if len(args) == 2 and isinstance(args[1], BaseException):  # ('Connection aborted.', RemoteDisconnected(...))
        text = f"{str(args[0]).rstrip('.')}: {args[1]}"
    elif len(args) >= 2 and isinstance(args[-1], str) and not isinstance(exc, urllib3.exceptions.NewConnectionError):
        text = args[-1]  # (connection, 'Connection to host timed out. (connect timeout=10)')
    else:
        text = str(exc).rpartition("): ")[2] or str(exc)  # "HTTPSConnection(host=...): Failed to ...: [Errno 111] ..."
    text = re.sub(r"^.*?: (?=\[Errno)", "", text)
    text = re.sub(r"\[Errno -?\d+\] ", "", text)
    return text.strip().rstrip(".").lower() or type(exc).__name__


def _first_error(exc: pydantic.ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(map(str, err['loc']))}: {err['msg']}" + (
        f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    )
