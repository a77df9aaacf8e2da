"""The catalog's shape: strict pydantic models, the single definition of what a catalog is.

`nexus schema` prints these models as JSON Schema, so editors validate the same rules.
Rules that need the whole catalog (references, cycles, stage order) live in validate.py.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from . import messages, naming

# A DNS-1123 label: teams, categories, stages, flows... become label values, object names and
# folder names.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
Name = Annotated[str, StringConstraints(pattern=DNS_LABEL, min_length=1, max_length=63)]
# A DNS-1035 label: a service and an infrastructure component are also a Kubernetes Service,
# whose name must start with a letter ('3d-render' is refused by the API server). Only the key
# that declares one is held to it: a reference to a misnamed service is not a second mistake.
DNS_1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
ServiceName = Annotated[str, StringConstraints(pattern=DNS_1035_LABEL, min_length=1, max_length=63)]


def _package(name: str) -> str:
    problem = naming.package_problem(name)
    if problem:
        raise ValueError(problem)
    return name


# The key that declares a service: also its Python package and distribution (naming.pkg).
ServiceKey = Annotated[ServiceName, AfterValidator(_package)]


def _namespace(namespace: str) -> str:
    problem = naming.namespace_problem(namespace)
    if problem:
        raise ValueError(problem)
    return namespace


Namespace = Annotated[Name, AfterValidator(_namespace)]
# Every field is strict (Strict below), so a quoted number is text and never a port.
Port = Annotated[int, Field(ge=1024, le=65535, description="An unprivileged TCP port, 1024 to 65535.")]
# Retries of one call. The runtime's settings take the same bound (nexus_runtime.settings.Retries):
# neither package may import the other, so tests/test_validate.py holds the two equal.
MAX_RETRIES = 5
Retries = Annotated[int, Field(ge=0, le=MAX_RETRIES)]
Email = Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
UrlPath = Annotated[str, StringConstraints(pattern=r"^/[A-Za-z0-9._~/-]*$")]
Quantity = Annotated[str, StringConstraints(pattern=r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti)?$")]
# A service's description is written into its Deployment as an annotation, and `kubectl apply`
# copies the whole object once more into its last-applied annotation: each character counts
# twice, at most 4 bytes in UTF-8 plus 6 as a JSON escape (\u003c), so 10 bytes. The API
# server refuses annotations over 256 KiB in all (262,144 bytes); 1,000 characters are at most
# 10,000 bytes, leaving the rest of the object ample room. Every text field has the same bound:
# each is one line of a table or a heading somewhere.
MAX_TEXT = 1000


def _not_blank(text: str) -> str:
    if not text.strip():  # a title or description of spaces alone: a blank cell, heading or annotation
        raise ValueError("must not be blank (it holds only whitespace); write the text")
    return text


Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT), AfterValidator(_not_blank)]

# The distribution grammar of an image reference (github.com/distribution/reference), lower
# case only: the prefix every service's image name starts with, `<prefix>/<service>:<version>`.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-z0-9]|[a-z0-9][a-z0-9-]*[a-z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-f:]+\])(?::[0-9]+)?"
IMAGE_PREFIX = rf"^(?:{_DOMAIN}|{_PATH_COMPONENT})(?:/{_PATH_COMPONENT})*$"
# An image name is at most 255 characters; the service's own part is '/' and up to 63.
MAX_IMAGE_PREFIX = 255 - 64
ImagePrefix = Annotated[str, StringConstraints(pattern=IMAGE_PREFIX, min_length=1, max_length=MAX_IMAGE_PREFIX)]
# A version is the image tag, the app.kubernetes.io/version label and each service's Python
# version: SemVer's MAJOR.MINOR.PATCH with an optional pre-release that all three read the
# same way (a Docker tag has no '+', so no build metadata; PEP 440 knows these pre-releases).
VERSION = r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-(alpha|beta|rc|dev)(\.?(0|[1-9][0-9]*))?)?$"
Version = Annotated[str, StringConstraints(pattern=VERSION, max_length=63)]

EdgeKind = Literal["hard", "soft"]
MeshKind = Literal["istio", "linkerd", "none"]

_DURATION = re.compile(r"^([0-9]+)(ms|s|m|h)$")
_DURATION_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


def duration_ms(value: str) -> int:
    """'500ms' -> 500, '2s' -> 2000 (the value already passed Duration's validation)."""
    number, unit = _DURATION.match(value).groups()  # type: ignore[union-attr]
    return int(number) * _DURATION_MS[unit]


def _duration(value: object) -> object:
    # Istio and Linkerd both read Go-style durations; a bare number has no unit, so refuse it
    # here, with the spelling that works, rather than guess seconds or milliseconds.
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return value  # pydantic's own type error says what was given
    text = str(value).strip()
    match = _DURATION.match(text)
    if not match:
        hint = f"'{text}s' or '{text}ms'" if re.fullmatch(r"[0-9]+", text) else "'500ms', '2s' or '1m'"
        raise ValueError(f"'{text}' is not a duration; write a whole number and a unit (ms, s, m, h), e.g. {hint}")
    if int(match.group(1)) == 0:
        raise ValueError(f"'{text}' is zero; a timeout or ejection time must be at least 1ms")
    return text


Duration = Annotated[
    str,
    BeforeValidator(_duration),
    WithJsonSchema({"type": "string", "pattern": _DURATION.pattern, "examples": ["500ms", "2s", "1m"]}),
]


def _close_name_maps(schema: dict[str, Any]) -> None:
    """Make a mapping keyed by names refuse other keys in the JSON Schema, as the models do.

    pydantic writes `dict[Name, X]` as patternProperties, which alone lets any key that does
    not match the pattern through unchecked: an editor would accept a service named 'Auth'.
    """
    for prop in schema.get("properties", {}).values():
        if "patternProperties" in prop:
            prop["additionalProperties"] = False


class Strict(BaseModel):
    # strict: the published schema says "integer" or "boolean", and YAML already tells 2 from
    # "2"; so a quoted number is text everywhere (never a port, never a replica count) and
    # true is never 1.
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, str_strip_whitespace=False, json_schema_extra=_close_name_maps
    )


class Health(Strict):
    """The four endpoints every service serves (the spec's Service Health section)."""

    health: UrlPath = "/health"
    ready: UrlPath = "/health/ready"
    live: UrlPath = "/health/live"
    metrics: UrlPath = "/metrics"


class Autoscaling(Strict):
    min_replicas: Annotated[int, Field(ge=1)] = 2
    max_replicas: Annotated[int, Field(ge=1)] = 10
    cpu_percent: Annotated[int, Field(ge=1, le=100)] = 70

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas}); make min_replicas "
                "<= max_replicas"
            )
        return self


class ResourceAmounts(Strict):
    cpu: Quantity
    memory: Quantity


class Resources(Strict):
    requests: ResourceAmounts = ResourceAmounts(cpu="100m", memory="128Mi")
    limits: ResourceAmounts = ResourceAmounts(cpu="500m", memory="256Mi")


class TrafficOverride(Strict):
    """Traffic settings of outgoing calls; each unset field falls back to the level above
    (edge -> calling service -> platform). What each becomes in Istio and Linkerd: the mesh page
    of the generated docs."""

    timeout: Duration | None = Field(None, description="Whole-request timeout, retries included, e.g. 2s.")
    retries: Retries | None = Field(
        None,
        description=(
            "Retries of idempotent calls on connect failures and 502/503/504 "
            f"(at most {MAX_RETRIES}, as the runtime allows)."
        ),
    )
    consecutive_5xx: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Circuit breaking: eject an endpoint after this many 5xx in a row."
    )
    ejection_time: Duration | None = Field(
        None, description="Circuit breaking: how long an ejected endpoint stays out, at least."
    )
    max_connections: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Circuit breaking: TCP connections to the target, per calling pod (Istio only)."
    )
    max_pending: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Circuit breaking: requests queued for a connection, per calling pod (Istio only)."
    )


class Traffic(Strict):
    """The platform's defaults for every edge: all fields set."""

    timeout: Duration = "2s"
    retries: Retries = 2
    consecutive_5xx: Annotated[int, Field(ge=1)] = 5
    ejection_time: Duration = "30s"
    max_connections: Annotated[int, Field(ge=1)] = 100
    max_pending: Annotated[int, Field(ge=1)] = 100


class Monitoring(Strict):
    """Where Prometheus runs: its pods scrape every service's metrics endpoint."""

    namespace: Name = Field("monitoring", description="Namespace of Prometheus; NetworkPolicies admit scrapes from it.")
    service_account: Name = Field(
        "prometheus-k8s",
        description="Prometheus's ServiceAccount: its mesh identity, admitted to GET the metrics endpoint.",
    )
    operator: bool = Field(
        True,
        description="The cluster runs the Prometheus Operator, so the overlays include the ServiceMonitors and alert "
        "rules. false for a cluster without its CRDs (a bare kind cluster): no ServiceMonitor or PrometheusRule is "
        "generated, and the NetworkPolicies still admit scrapes from the monitoring namespace (a plain Prometheus "
        "can scrape).",
    )


class Platform(Strict):
    """Platform-wide defaults; a service overrides only what it must."""

    name: Name = Field(description="The platform's name, used in labels (app.kubernetes.io/part-of).")
    namespace: Namespace = Field(
        description=(
            "The Kubernetes namespace everything is deployed into (not kube-*, default, nor the monitoring or a "
            "mesh's)."
        )
    )
    version: Version = Field(
        description=(
            "Version label and image tag of the generated services: MAJOR.MINOR.PATCH, optionally -alpha, -beta, -rc "
            "or -dev and a number, e.g. 1.2.0-rc.1."
        )
    )
    image_registry: ImagePrefix = Field(
        description=(
            "Registry prefix for service images, lower case, e.g. ghcr.io/nexus-cos; images are "
            "<prefix>/<service>:<version>."
        )
    )
    gateway: Name = Field(description="The service external traffic enters through; every flow starts here.")
    health: Health = Health()
    autoscaling: Autoscaling = Autoscaling()
    resources: Resources = Resources()
    mesh: MeshKind = Field(
        "none", description="Service mesh the manifests configure: mTLS, per-edge authorization, timeouts and retries."
    )
    traffic: Traffic = Field(Traffic(), description="Defaults for every edge's timeout, retries and circuit breaking.")
    monitoring: Monitoring = Monitoring()


# A GitHub user (@name) or team (@org/team), as CODEOWNERS writes owners.
Handle = Annotated[str, StringConstraints(pattern=r"^@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:/[A-Za-z0-9._-]+)?$")]


class Team(Strict):
    title: Text
    contact: Email = Field(description="Where service-specific questions go.")
    oncall: Email = Field(description="Who is paged.")
    handle: Handle | None = Field(
        None,
        description=(
            "GitHub user or team that owns the team's services in CODEOWNERS, e.g. `@nexus-cos/media`. Default: "
            "`@<platform name>/<team name>`."
        ),
    )


class PortRange(Strict):
    """The block of ports `nexus new` hands out to a category's new services, lowest free first.

    It says where *new* services go; services already in the catalog may sit outside it (the
    spec's ports predate the blocks). Blocks of two categories never overlap (validate.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    first: Port = Field(alias="from", description="First port of the block.")
    last: Port = Field(alias="to", description="Last port of the block (inclusive).")

    @model_validator(mode="after")
    def _order(self) -> PortRange:
        if self.first > self.last:
            raise ValueError(f"from ({self.first}) is above to ({self.last}); write the lower port first")
        return self


class Category(Strict):
    title: Text = Field(description="Heading in the services index, e.g. 'Core Services'.")
    summary: Text = Field(description="The line under the heading in the services index.")
    ports: PortRange | None = Field(
        None,
        description=(
            "Ports for the category's new services (`nexus new`). Without it, new services get the first free port "
            "above the category's highest."
        ),
    )


# A DNS name (RFC 1123 labels joined by dots) or an IPv4 address: where a managed instance is.
HOSTNAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
Hostname = Annotated[str, StringConstraints(pattern=HOSTNAME, min_length=1, max_length=253)]
# What each kind is, locally and in the cluster: one engine per kind (docs/running.md says why).
InfraKind = Literal["database", "cache", "message-queue"]
ENGINES: dict[str, str] = {"database": "postgres", "cache": "redis", "message-queue": "nats"}


class ExternalInstance(Strict):
    """A managed instance outside the platform (RDS, Cloud SQL, an operator's cluster)."""

    host: Hostname = Field(description="Its DNS name or IPv4 address, e.g. db.prod.example.com.")
    port: Annotated[int, Field(ge=1, le=65535)] = Field(description="Its TCP port.")
    secret: Name = Field(
        description="The Kubernetes Secret in the platform's namespace holding its administrator's "
        "credentials (keys `username` and `password`); created by its owners, never by Nexus. For a database, "
        "`nexus deploy` runs a Job as this administrator that gives each user a role and a database of its "
        "own, with passwords it makes once (Secrets `<component>.<service>`). A managed cache or message queue "
        "takes its users from its provider: their Secrets (key `password`) are its owners' to create "
        "(docs/deploy.md)."
    )


class Infrastructure(Strict):
    kind: InfraKind = Field(
        description="database: PostgreSQL; cache: Redis; message-queue: NATS with JetStream. "
        "Each user gets its own database and role, ACL user and key prefix, or broker user."
    )
    description: Text
    port: Port
    external: ExternalInstance | None = Field(
        None,
        description="Set for a managed instance: the cluster runs no StatefulSet for it and services are pointed "
        "at this host and port. Without it the platform runs its own (internal). `nexus up` always runs a local one.",
    )
    image: Text | None = Field(
        None,
        description="The server's container image when internal, e.g. a mirror's copy; unset: the engine's official "
        "image at the release Nexus is tested with (docs/deploy.md).",
    )
    storage: Quantity = Field("10Gi", description="The size of an internal server's PersistentVolumeClaim.")

    @property
    def engine(self) -> str:
        return ENGINES[self.kind]

    def address(self, name: str) -> tuple[str, int]:
        """Where its users reach it: a managed instance's host and port, else its own Service (named ``name``)."""
        return (self.external.host, self.external.port) if self.external else (name, self.port)


class External(Strict):
    """Something outside the platform that a flow reaches (a CDN): reported, never called."""

    description: Text
    url: Text


class Stage(Strict):
    name: Name
    title: Text
    description: Text
    default: bool = Field(False, description="Services listed in no stage belong to this one (at most one stage).")
    services: list[Name] = []
    infrastructure: list[Name] = []


_KIND_ONLY = frozenset({"kind"})  # the fields of an edge that sets no traffic of its own (Catalog.traffic_for)


class Dependency(TrafficOverride):
    kind: EdgeKind = Field(
        description=(
            "hard: the dependent's own routes need it (readiness: docs/running.md), and it orders deployment. soft: "
            "called at request time only."
        )
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        # `user-auth: hard` is the common spelling; the mapping form carries per-edge traffic settings.
        return {"kind": value} if isinstance(value, str) else value

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        # the schema must allow the shorthand too, or editors flag every edge of the catalog
        mapping = handler(core_schema)
        return {"anyOf": [{"type": "string", "enum": ["hard", "soft"]}, mapping]}


class Service(Strict):
    port: Port
    category: Name
    team: Name
    stage: Name | None = Field(
        None, description="Deployment stage, when the stage's own list does not name this service."
    )
    description: Text = Field(description="One line, exactly as in the services index.")
    depends_on: dict[Name, Dependency] = Field({}, description="Services this one calls, each hard or soft.")
    uses: list[Name] = Field([], description="Infrastructure components this service needs (hard).")
    externals: list[Name] = Field([], description="External systems this service reaches (e.g. the CDN).")
    session_affinity: bool = Field(
        False,
        description=(
            "Keep a client on one pod: kube-proxy's ClientIP affinity without a mesh (per calling pod), "
            "Istio's consistent hash on the client key; Linkerd has none."
        ),
    )
    websocket: bool = Field(False, description="Serve a WebSocket endpoint for live streaming.")
    autoscaling: Autoscaling | None = None
    resources: Resources | None = None
    traffic: TrafficOverride | None = Field(
        None, description="Overrides of the platform's traffic defaults for all of this service's outgoing edges."
    )


class ExternalHop(Strict):
    external: Name


class Flow(Strict):
    title: Text
    description: Text = ""
    hops: Annotated[list[Name | ExternalHop], Field(min_length=1)]

    def names(self) -> list[str]:
        return [h if isinstance(h, str) else h.external for h in self.hops]


# A message field becomes a Python attribute of the generated model and a JSON property:
# snake_case, never a keyword (checked in messages.field_problem).
FIELD_NAME = r"^[a-z][a-z0-9_]*$"


def _field_name(name: str) -> str:
    problem = messages.field_problem(name)
    if problem:
        raise ValueError(problem)
    return name


FieldName = Annotated[str, StringConstraints(pattern=FIELD_NAME, max_length=63), AfterValidator(_field_name)]


def _field_type(text: str) -> str:
    messages.field_type(text)  # raises ValueError with the grammar when it does not parse
    return text


FieldType = Annotated[
    str,
    AfterValidator(_field_type),
    WithJsonSchema(
        {
            "type": "string",
            "description": "string, integer, number, boolean, datetime, uuid; list[T]; a trailing ? makes it optional",
            "examples": ["string", "integer", "datetime", "list[uuid]", "string?"],
        }
    ),
]
EventKind = Literal["queue", "pubsub", "stream"]
# A channel becomes a subject part, a stream name and Python names (a class, a module): a
# DNS-1035 label, written as its own pattern so its errors say why.
CHANNEL_NAME = r"^[a-z](?:[-a-z0-9]*[a-z0-9])?$"
ChannelName = Annotated[str, StringConstraints(pattern=CHANNEL_NAME, min_length=1, max_length=63)]


class Message(Strict):
    """The payload of a channel: a version and typed fields (the generated pydantic model)."""

    version: Annotated[int, Field(ge=1, le=999)] = Field(
        1, description="Schema version: a breaking change is a new version, on a subject of its own."
    )
    fields: Annotated[dict[FieldName, FieldType], Field(min_length=1)] = Field(
        description="Field name -> type: string, integer, number, boolean, datetime, uuid, list[T], T? (optional)."
    )


class Channel(Strict):
    """An event channel on the message broker (kinds, subjects and delivery: docs/events.md)."""

    kind: EventKind = Field(
        description="queue: each message handled by one instance of one service. pubsub: every subscribing service "
        "gets every message. stream: durable, ordered and replayable from the start (an audit trail)."
    )
    description: Text
    message: Message
    publishers: list[Name] = Field([], description="Services that publish on this channel.")
    subscribers: list[Name] = Field([], description="Services that consume this channel.")


class Catalog(Strict):
    """A whole platform: what runs, who owns it, in which order it deploys, and what must work."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="Nexus catalog")

    version: Literal[1] = 1
    platform: Platform
    teams: dict[Name, Team]
    categories: dict[Name, Category]
    stages: Annotated[list[Stage], Field(min_length=1)]
    infrastructure: dict[ServiceName, Infrastructure] = {}
    externals: dict[Name, External] = {}
    services: Annotated[dict[ServiceKey, Service], Field(min_length=1)]
    flows: dict[Name, Flow] = {}
    events: dict[ChannelName, Channel] = Field({}, description="Event channels: queues, pub/sub and streams.")

    def stage_of(self) -> dict[str, str]:
        """Service name -> stage name; a service listed nowhere goes to the default stage."""
        out: dict[str, str] = {}
        default = next((s.name for s in self.stages if s.default), None)
        for stage in self.stages:
            for name in stage.services:
                out.setdefault(name, stage.name)
        for name, service in self.services.items():
            if service.stage:
                out.setdefault(name, service.stage)
        if default:
            for name in self.services:
                out.setdefault(name, default)
        return out

    def users_of(self, component: str) -> list[str]:
        """The services that use an infrastructure component, sorted: each gets its own user there."""
        return sorted(n for n, s in self.services.items() if component in s.uses)

    def relayed_live(self) -> list[str]:
        """The live (WebSocket) services the gateway relays at /live/<name>: its dependencies that
        serve one, sorted (the runtime's relay_router relays the same, from the gateway's spec)."""
        return sorted(d for d in self.services[self.platform.gateway].depends_on if self.services[d].websocket)

    def autoscaling_for(self, name: str) -> Autoscaling:
        return self.services[name].autoscaling or self.platform.autoscaling

    def resources_for(self, name: str) -> Resources:
        return self.services[name].resources or self.platform.resources

    def traffic_for(self, source: str, target: str) -> Traffic:
        """The settings of the edge source -> target: the edge's own, else the source
        service's, else the platform's."""
        svc = self.services[source]
        edge = svc.depends_on[target]
        if svc.traffic is None and edge.model_fields_set <= _KIND_ONLY:
            # most edges: no field of either layer given (asked of 30,000 edges at 10,000 services
            # on every run, by the mesh docs: looking through both layers' fields took 0.05 s)
            return self.platform.traffic
        overrides: dict[str, Any] = {}
        for layer in (svc.traffic, edge):  # the nearer one last: it wins
            if layer is not None:
                overrides.update((f, v) for f in Traffic.model_fields if (v := getattr(layer, f)) is not None)
        if not overrides:  # most edges: the platform's settings, one (frozen) object for all of them
            return self.platform.traffic
        return Traffic(**{**self.platform.traffic.model_dump(), **overrides})

    def mesh_retries(self) -> bool:
        """Whether the mesh retries (then the generated clients must not)."""
        return self.platform.mesh != "none"
