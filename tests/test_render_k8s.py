"""The Kubernetes area: the shipped catalog rendered, built by the real `kubectl kustomize`, and
validated against the official schemas; then one catalog rule per test on small catalogs."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CATALOG, dump
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tools import broken_at_random, find

from nexus.catalog import load_catalog, load_catalog_text
from nexus.catalog.graph import edges
from nexus.checks import k8s as k8s_checks
from nexus.checks.documents import documents
from nexus.checks.kubernetes_schema import SchemaValidator
from nexus.render import k8s as render_k8s
from nexus.render import mesh as render_mesh
from nexus.render.context import RenderContext

OVERLAYS = ("dev", "staging", "prod")
NAME = "app.kubernetes.io/name"
SERVICE_KINDS = {
    "ServiceAccount",
    "ConfigMap",
    "Service",
    "Deployment",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "NetworkPolicy",
}


def render(loaded: Any) -> tuple[RenderContext, dict[str, str]]:
    """The Kubernetes files: this area's, and the components the overlays include (render_mesh)."""
    ctx = RenderContext(loaded.catalog, loaded.plan)
    components = {p: t for p, t in render_mesh.render(ctx).items() if p.startswith("k8s/components/")}
    return ctx, {**render_k8s.render(ctx), **components}


# what the components add (the mesh area tests them): API groups of CRDs, and the mesh's way to its control plane
COMPONENT_GROUPS = ("monitoring.coreos.com/", "istio.io/", "linkerd.io/")


def base_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        d
        for d in docs
        if not any(g in d["apiVersion"] for g in COMPONENT_GROUPS)
        and not d["metadata"]["name"].endswith("-control-plane")
    ]


def write(files: dict[str, str], root: Path) -> Path:
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text, encoding="utf-8")
    return root


def kustomize(root: Path) -> dict[str, list[dict[str, Any]]]:
    """Every overlay built by the real kubectl, the three at once."""
    runs = {
        env: subprocess.Popen(
            [find("kubectl"), "kustomize", str(root / "k8s/overlays" / env)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for env in OVERLAYS
    }
    built = {}
    for env, proc in runs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"kubectl kustomize overlays/{env} failed: {err}"
        built[env] = [d for d in yaml.safe_load_all(out) if d]
    return built


@pytest.fixture(scope="module")
def shipped() -> tuple[RenderContext, dict[str, str]]:
    return render(load_catalog(CATALOG))


@pytest.fixture(scope="module")
def built(
    shipped: tuple[RenderContext, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[dict[str, Any]]]:
    return {
        env: base_objects(docs) for env, docs in kustomize(write(shipped[1], tmp_path_factory.mktemp("k8s"))).items()
    }


def objects(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


# -- layout ------------------------------------------------------------------------------------


def test_layout_is_a_base_and_three_overlays(shipped: tuple[RenderContext, dict[str, str]]) -> None:
    ctx, files = shipped
    files = {p: t for p, t in files.items() if not p.startswith("k8s/components/")}
    services = {f"k8s/base/services/{n}.yaml" for n in ctx.catalog.services}
    base = {f"k8s/base/{f}.yaml" for f in ("kustomization", "namespace", "default-deny")}
    base |= {f"k8s/base/infrastructure/{c}.yaml" for c in ("nats", "postgres", "redis")}
    overlays = {f"k8s/overlays/{e}/kustomization.yaml" for e in OVERLAYS} | {
        f"k8s/overlays/dev/{p}-patch.yaml" for p in ("autoscaling", "resources")
    }
    overlays.add("k8s/overlays/prod/settings-patch.yaml")
    assert set(files) == services | base | overlays
    assert list(files) == sorted(files)


def test_base_kustomization_names_the_namespace_and_every_file_sorted(
    shipped: tuple[RenderContext, dict[str, str]],
) -> None:
    ctx, files = shipped
    kustomization = yaml.safe_load(files["k8s/base/kustomization.yaml"])
    assert kustomization["namespace"] == ctx.catalog.platform.namespace == "nexus-cos"
    listed = kustomization["resources"]
    assert listed == sorted(listed)
    assert {f"k8s/base/{p}" for p in listed} == {
        p for p in files if p.startswith("k8s/base/") and not p.endswith("kustomization.yaml")
    }


def test_namespace_enforces_pod_security_restricted(shipped: tuple[RenderContext, dict[str, str]]) -> None:
    labels = yaml.safe_load(shipped[1]["k8s/base/namespace.yaml"])["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["pod-security.kubernetes.io/enforce-version"] == "v1.32"


def test_default_deny_covers_every_pod_both_ways(shipped: tuple[RenderContext, dict[str, str]]) -> None:
    deny = yaml.safe_load(shipped[1]["k8s/base/default-deny.yaml"])
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


# -- the built overlays ------------------------------------------------------------------------


def test_prod_turns_off_api_docs_and_platform_routes_in_every_service(built: dict[str, list[dict[str, Any]]]) -> None:
    """The prod overlay sets the runtime's own settings on every container; dev and staging
    keep the defaults (docs on, /platform on: `nexus verify --base-url` works there)."""
    from nexus.local.run import _settings_model

    known = {f.upper() for f in _settings_model(Path(__file__).parent.parent / "generated").model_fields}
    for env, docs in built.items():
        for name, deployment in objects(docs, "Deployment").items():
            (container,) = deployment["spec"]["template"]["spec"]["containers"]
            settings = {e["name"]: e["value"] for e in container.get("env", [])}
            assert settings == ({"API_DOCS": "false", "PLATFORM_ROUTES": "false"} if env == "prod" else {}), (env, name)
            assert set(settings) <= known, f"{env}: {name}: not a runtime setting: {set(settings) - known}"
            assert container["envFrom"], (env, name)  # the ConfigMap still comes first; env wins over it


def test_every_overlay_builds_and_passes_the_strict_schemas(
    built: dict[str, list[dict[str, Any]]], shipped: tuple[RenderContext, dict[str, str]]
) -> None:
    import jsonschema
    from referencing import Registry, Resource

    from nexus.checks.kubernetes_schema import schema_dir, schema_file

    # kubernetes_validate.validate()'s own construction, with the validator kept per kind
    folder = schema_dir("1.32")
    registry = Resource.from_contents(yaml.safe_load((folder / "_definitions.json").read_text())) @ Registry()
    validators: dict[tuple[str, str], jsonschema.Draft202012Validator] = {}
    n = len(shipped[0].catalog.services)
    for env, docs in built.items():
        # + namespace, default deny; 6 per internal infrastructure component (ServiceAccount, ConfigMap,
        # Service, StatefulSet, PodDisruptionBudget, NetworkPolicy)
        assert len(docs) == 7 * n + 2 + 6 * 3, env
        for doc in docs:
            key = (doc["apiVersion"], doc["kind"])
            if key not in validators:
                schema = yaml.safe_load((folder / schema_file(*key)).read_text())
                validators[key] = jsonschema.Draft202012Validator(
                    schema, registry=Resource.from_contents(schema) @ registry
                )
            errors = [e.message for e in validators[key].iter_errors(doc)]
            assert not errors, f"{env}: {doc['kind']} {doc['metadata']['name']}: {errors}"


def test_kubernetes_validate_itself_accepts_one_of_each_kind(built: dict[str, list[dict[str, Any]]]) -> None:
    import kubernetes_validate

    firsts = {d["kind"]: d for d in reversed(built["prod"])}
    assert set(firsts) == SERVICE_KINDS | {"Namespace", "StatefulSet"}
    for doc in firsts.values():
        assert kubernetes_validate.validate(doc, "1.32", strict=True) == "1.32"


def test_pods_meet_pod_security_restricted(built: dict[str, list[dict[str, Any]]]) -> None:
    """Services and infrastructure alike, every container including the init containers."""
    for env, docs in built.items():
        workloads = {**objects(docs, "Deployment"), **objects(docs, "StatefulSet")}
        assert len(workloads) == 43 + 3
        for name, dep in workloads.items():
            pod = dep["spec"]["template"]["spec"]
            assert pod["securityContext"] == {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "fsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            }, (env, name)
            assert pod["automountServiceAccountToken"] is False
            for container in [*pod.get("initContainers", []), *pod["containers"]]:
                assert container["securityContext"] == {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "runAsNonRoot": True,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                }, (name, container["name"])
                mounts = {m["name"]: m for m in container["volumeMounts"]}
                assert mounts["tmp"] == {"name": "tmp", "mountPath": "/tmp"}
                # credentials only as read-only files, never as environment variables
                assert "env" not in container or all("valueFrom" not in e for e in container["env"])
                if "credentials" in mounts:
                    assert mounts["credentials"]["readOnly"] is True
            assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == "tmp")
        for name, sa in objects(docs, "ServiceAccount").items():
            assert sa["automountServiceAccountToken"] is False, name


def test_each_service_mounts_exactly_its_own_credentials_and_migrates_first(
    built: dict[str, list[dict[str, Any]]], shipped: tuple[RenderContext, dict[str, str]]
) -> None:
    cat = shipped[0].catalog
    docs = built["prod"]
    configs = objects(docs, "ConfigMap")
    for name, dep in objects(docs, "Deployment").items():
        pod = dep["spec"]["template"]["spec"]
        uses = sorted(cat.services[name].uses)
        volume = next((v for v in pod["volumes"] if v["name"] == "credentials"), None)
        if not uses:
            assert volume is None and "initContainers" not in pod, name
            continue
        secrets = [s["secret"]["name"] for s in volume["projected"]["sources"]]
        assert secrets == [f"{c}.{name}" for c in uses], name  # its own: <component>.<service>
        data = configs[f"{name}-config"]["data"]
        assert data["SECRETS_DIR"] == "/var/run/secrets/nexus"
        for comp in uses:
            url = data[f"{comp.upper()}_URL"]
            assert f"@{comp}:{cat.infrastructure[comp].port}" in url and ":" not in url.split("//")[1].split("@")[0]
        migrate = [c for c in pod.get("initContainers", []) if c["name"] == "migrate"]
        if "postgres" in uses:
            (init,) = migrate
            assert init["image"] == pod["containers"][0]["image"]
            assert init["command"][-3:] == ["/srv/service/migrations", "--url-from", "POSTGRES_URL"]
        else:
            assert migrate == []


def test_infrastructure_runs_as_statefulsets_with_volumes_probes_and_budgets(
    built: dict[str, list[dict[str, Any]]], shipped: tuple[RenderContext, dict[str, str]]
) -> None:
    cat = shipped[0].catalog
    docs = built["prod"]
    budgets, policies = objects(docs, "PodDisruptionBudget"), objects(docs, "NetworkPolicy")
    services = objects(docs, "Service")
    for name, sts in objects(docs, "StatefulSet").items():
        comp = cat.infrastructure[name]
        assert sts["spec"]["replicas"] == 1 and sts["spec"]["serviceName"] == name
        (claim,) = sts["spec"]["volumeClaimTemplates"]
        assert claim["spec"]["resources"]["requests"]["storage"] == comp.storage
        containers = {c["name"]: c for c in sts["spec"]["template"]["spec"]["containers"]}
        # NATS's pod also runs the stream provisioning, ready once the streams exist
        assert sorted(containers) == sorted({comp.engine} | ({"provision"} if comp.engine == "nats" else set()))
        assert all({"startupProbe", "readinessProbe", "livenessProbe"} <= set(c) for c in containers.values())
        container = containers[comp.engine]
        assert container["ports"][0] == {"name": "server", "containerPort": comp.port, "protocol": "TCP"}
        assert services[name]["spec"]["clusterIP"] == "None"
        assert budgets[name]["spec"]["minAvailable"] == 1
        users = sorted(n for n, s in cat.services.items() if name in s.uses)
        admitted = [
            p["podSelector"]["matchLabels"][NAME] for p in policies[f"{name}-ingress"]["spec"]["ingress"][0]["from"]
        ]
        assert admitted == users
        sources = sts["spec"]["template"]["spec"]["volumes"][1]["projected"]["sources"]
        assert [s["secret"]["name"] for s in sources] == [name] + [f"{name}.{u}" for u in users]


def test_labels_names_image_and_probes_follow_the_conventions(
    built: dict[str, list[dict[str, Any]]], shipped: tuple[RenderContext, dict[str, str]]
) -> None:
    cat = shipped[0].catalog
    docs = built["prod"]
    for name, svc in cat.services.items():
        expected = {
            "app": name,
            NAME: name,
            "app.kubernetes.io/part-of": "nexus-cos",
            "app.kubernetes.io/component": svc.category,
            "app.kubernetes.io/version": "1.0.0",
            "app.kubernetes.io/managed-by": "nexus",
            "nexus.dev/team": svc.team,
            "nexus.dev/environment": "prod",
        }
        for kind in SERVICE_KINDS:
            obj = objects(docs, kind)[f"{name}-config" if kind == "ConfigMap" else name]
            assert obj["metadata"]["labels"] == expected, (kind, name)
            assert obj["metadata"]["namespace"] == "nexus-cos"
        dep = objects(docs, "Deployment")[name]
        assert dep["spec"]["template"]["metadata"]["labels"] == expected  # `kubectl logs -l app=<name>`
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        assert container["name"] == name
        assert container["image"] == f"ghcr.io/nexus-cos/{name}:1.0.0"
        assert container["ports"] == [{"name": "http", "containerPort": svc.port, "protocol": "TCP"}]
        probes = {k: container[k]["httpGet"] for k in ("livenessProbe", "readinessProbe", "startupProbe")}
        assert probes == {
            "livenessProbe": {"path": "/health/live", "port": "http"},
            "readinessProbe": {"path": "/health/ready", "port": "http"},
            "startupProbe": {"path": "/health", "port": "http"},
        }
        assert container["resources"] == {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        }


def test_configmaps_carry_name_port_and_one_url_per_dependency(
    built: dict[str, list[dict[str, Any]]], shipped: tuple[RenderContext, dict[str, str]]
) -> None:
    cat = shipped[0].catalog
    maps = objects(built["prod"], "ConfigMap")
    assert maps["backend-api-config"]["data"]["USER_AUTH_URL"] == "http://user-auth:3003"  # the issue's example
    for name, svc in cat.services.items():
        urls = {f"{d.upper().replace('-', '_')}_URL": f"http://{d}:{cat.services[d].port}" for d in svc.depends_on}
        data = maps[f"{name}-config"]["data"]
        # what it uses: one URL each (no password in it), where the Secret files are, the broker's user
        infra = {f"{c.upper()}_URL" for c in svc.uses} | ({"SECRETS_DIR"} if svc.uses else set())
        infra |= {"BROKER_SERVERS", "BROKER_USER"} if "nats" in svc.uses else set()
        assert data == {"SERVICE_NAME": name, "PORT": str(svc.port), **urls, **{k: data[k] for k in infra}}
        dep = objects(built["prod"], "Deployment")[name]
        assert dep["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [
            {"configMapRef": {"name": f"{name}-config"}}
        ]


def test_services_expose_the_catalog_port_with_affinity_where_asked(
    built: dict[str, list[dict[str, Any]]], shipped: tuple[RenderContext, dict[str, str]]
) -> None:
    cat = shipped[0].catalog
    services = objects(built["prod"], "Service")
    for name, svc in cat.services.items():
        spec = services[name]["spec"]
        assert spec["ports"] == [{"name": "http", "port": svc.port, "targetPort": "http", "protocol": "TCP"}]
        assert spec.get("sessionAffinity") == ("ClientIP" if svc.session_affinity else None), name
    assert {n for n, s in services.items() if s["spec"].get("sessionAffinity")} == {
        "backend-api",
        "boom-boom-room-live",
        "puaboverse-v2",
        "streaming-service-v2",
        "v-caster-pro",
    }


def test_no_replicas_beside_the_hpa_whose_numbers_follow_the_environment(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    for env, (low, high) in {"prod": (2, 10), "staging": (2, 10), "dev": (1, 2)}.items():
        hpas = objects(built[env], "HorizontalPodAutoscaler")
        for name, dep in objects(built[env], "Deployment").items():
            assert "replicas" not in dep["spec"], (env, name)
            spec = hpas[name]["spec"]
            assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
            assert (spec["minReplicas"], spec["maxReplicas"]) == (low, high), (env, name)
            assert spec["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
        assert all(
            p["spec"]["maxUnavailable"] == 1
            for n, p in objects(built[env], "PodDisruptionBudget").items()
            if n in hpas  # the infrastructure has its own rule (test_infrastructure_runs_as_statefulsets...)
        )


def test_replicas_spread_over_nodes_counting_their_own_pods(built: dict[str, list[dict[str, Any]]]) -> None:
    """Two replicas may otherwise share a node (the scheduler's defaults allow a skew of three),
    and one lost node takes both. A constraint whose selector missed the pods would spread
    nothing, silently: it counts exactly the Deployment's own pods. Nodes only: a zone
    constraint made the testbed's scheduler (nodes with no zone label) put both on one node."""
    for env, docs in built.items():
        for name, dep in objects(docs, "Deployment").items():
            pod = dep["spec"]["template"]
            spread = pod["spec"]["topologySpreadConstraints"]
            assert [c["topologyKey"] for c in spread] == ["kubernetes.io/hostname"]
            for c in spread:
                assert (c["maxSkew"], c["whenUnsatisfiable"]) == (1, "ScheduleAnyway"), (env, name)
                chosen = c["labelSelector"]["matchLabels"]
                assert chosen == dep["spec"]["selector"]["matchLabels"], (env, name)
                assert chosen.items() <= pod["metadata"]["labels"].items(), (env, name)


def test_dev_halves_requests_and_keeps_limits(built: dict[str, list[dict[str, Any]]]) -> None:
    for dep in objects(built["dev"], "Deployment").values():
        resources = dep["spec"]["template"]["spec"]["containers"][0]["resources"]
        assert resources == {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}}


def test_sync_waves_are_the_plan_and_put_hard_dependencies_first(
    built: dict[str, list[dict[str, Any]]], shipped: tuple[RenderContext, dict[str, str]]
) -> None:
    ctx = shipped[0]
    deployments = objects(built["prod"], "Deployment")
    wave = {n: int(d["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]) for n, d in deployments.items()}
    assert wave == {n: ctx.plan.wave_of[n] for n in ctx.catalog.services}
    for e in ctx.edges:
        if e["kind"] == "hard":
            assert wave[e["target"]] < wave[e["source"]], e


def _pairs(docs: list[dict[str, Any]]) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(ingress, egress) pod-to-pod pairs, read plainly from built NetworkPolicies."""
    ingress, egress = set(), set()
    for policy in objects(docs, "NetworkPolicy").values():
        target = policy["spec"]["podSelector"].get("matchLabels", {}).get(NAME)
        for rule in policy["spec"].get("ingress") or []:
            ingress |= {
                (p["podSelector"]["matchLabels"][NAME], target)
                for p in rule["from"]
                if "podSelector" in p and "namespaceSelector" not in p
            }
        for rule in policy["spec"].get("egress") or []:
            egress |= {
                (target, p["podSelector"]["matchLabels"][NAME])
                for p in rule["to"]
                if "podSelector" in p and "namespaceSelector" not in p
            }
    return ingress, egress


def test_network_policies_allow_exactly_the_catalog_edges(
    built: dict[str, list[dict[str, Any]]], shipped: tuple[RenderContext, dict[str, str]]
) -> None:
    cat = shipped[0].catalog
    ingress, egress = _pairs(built["prod"])
    service_edges = {(e["source"], e["target"]) for e in edges(cat)}
    uses = {(n, c) for n, s in cat.services.items() for c in s.uses}
    assert {p for p in ingress if p[1] in cat.services} == service_edges
    assert {p for p in egress if p[1] in cat.services} == service_edges
    assert (
        {p for p in ingress if p[1] in cat.infrastructure} == uses == {p for p in egress if p[1] in cat.infrastructure}
    )
    monitoring = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": cat.platform.monitoring.namespace}}
    }
    peers = [
        (n, peer)
        for n, p in objects(built["prod"], "NetworkPolicy").items()
        for r in p["spec"].get("ingress") or []
        for peer in r["from"]
    ]
    outside = {n for n, peer in peers if "namespaceSelector" in peer and peer != monitoring}
    assert outside == {"backend-api"}
    # Prometheus (its namespace: platform.monitoring) may reach every service, and nothing else
    assert {n for n, peer in peers if peer == monitoring} == set(cat.services)
    internet = {
        n
        for n, p in objects(built["prod"], "NetworkPolicy").items()
        for r in p["spec"].get("egress") or []
        for peer in r["to"]
        if "ipBlock" in peer
    }
    assert internet == {"streamcore"}  # the only service with externals (the CDN)


# -- checks ------------------------------------------------------------------------------------


def test_checks_pass_on_the_shipped_catalog(shipped: tuple[RenderContext, dict[str, str]]) -> None:
    ctx, files = shipped
    assert k8s_checks.run(ctx, files) == []
    assert k8s_checks.run(ctx, files, strict_schema=False) == []


SVC = "k8s/base/services/{}.yaml"


def _break(files: dict[str, str], service: str, old: str, new: str) -> dict[str, str]:
    """``files`` with every ``old`` in the service's file replaced."""
    path = SVC.format(service)
    assert old in files[path], f"{old!r} not in {path}"
    return {**files, path: files[path].replace(old, new)}


BREAKAGES = {
    # (a) schema: a field Kubernetes does not know
    "schema": (
        "token-mgr",
        "          imagePullPolicy: Always\n",
        "          imagePullPolicy: Always\n          imagePullSecret: registry\n",
        "'imagePullSecret' was unexpected",
    ),
    # (b) a Service port that is not the catalog's
    "service-port": (
        "ledger-mgr",
        "      port: 3022\n      targetPort: http",
        "      port: 3999\n      targetPort: http",
        "Service ports [3999]",
    ),
    # (c) a dependency URL at the wrong port, and one naming the wrong service
    "url-port": ("billing-service", '"http://ledger-mgr:3022"', '"http://ledger-mgr:3023"', "LEDGER_MGR_URL"),
    "url-host": ("billing-service", '"http://invoice-gen:3021"', '"http://scheduler:3021"', "INVOICE_GEN_URL"),
    # (d) an ingress peer removed (an edge no longer allowed) and an egress added (a pair not in the catalog)
    "policy-missing": (
        "user-auth",
        'app.kubernetes.io/name: "auth-service"\n',
        'app.kubernetes.io/name: "glitch"\n',
        "auth-service -> user-auth is a catalog edge",
    ),
    "policy-extra": (
        "glitch",
        'name: "postgres"\n      ports:\n        - protocol: TCP\n          port: 5432',
        'name: "ledger-mgr"\n      ports:\n        - protocol: TCP\n          port: 3022',
        "glitch -> ledger-mgr is allowed but is not in the catalog",
    ),
    # (d') Prometheus's scrape rule: gone, or on another port
    "monitoring-missing": (
        "glitch",
        '              kubernetes.io/metadata.name: "monitoring"\n',
        '              kubernetes.io/metadata.name: "default"\n',
        "glitch: no ingress from Prometheus",
    ),
    "monitoring-port": (
        "kei-ai",
        '"monitoring"\n      ports:\n        - protocol: TCP\n          port: 3030',
        '"monitoring"\n      ports:\n        - protocol: TCP\n          port: 9090',
        "ingress from Prometheus on [('TCP', 9090)]",
    ),
    # (e) a dependent syncing no later than its hard dependency
    "wave": ("session-mgr", 'sync-wave: "5"', 'sync-wave: "4"', "sync-wave 4 is not after token-mgr's 4"),
    # (f) a critical-path hop to a service without a readiness probe
    "flow-probe": (
        "invoice-gen",
        "readinessProbe:",
        "x-readiness:",
        "flow payment-processing hop billing-service -> invoice-gen",
    ),
}


@pytest.mark.parametrize("case", sorted(BREAKAGES))
def test_each_check_fires_and_names_the_service_and_file(
    case: str, shipped: tuple[RenderContext, dict[str, str]]
) -> None:
    ctx, files = shipped
    service, old, new, expected = BREAKAGES[case]
    failures = k8s_checks.run(ctx, _break(files, service, old, new))
    assert any(expected in f for f in failures), failures
    hit = next(f for f in failures if expected in f)
    assert hit.split(": ")[:2][1] in ctx.catalog.services and hit.startswith("k8s/base/services/"), hit


def test_the_flow_check_fires_when_policy_blocks_a_hop(shipped: tuple[RenderContext, dict[str, str]]) -> None:
    ctx, files = shipped
    broken = _break(
        files,
        "session-mgr",
        '              app.kubernetes.io/name: "user-auth"\n',
        '              app.kubernetes.io/name: "glitch"\n',
    )
    failures = k8s_checks.run(ctx, broken)
    assert (
        f"{SVC.format('user-auth')}: user-auth: flow authentication hop user-auth -> session-mgr: not allowed by the "
        "NetworkPolicies" in failures
    )


def test_a_missing_default_deny_and_a_broad_peer_are_failures(shipped: tuple[RenderContext, dict[str, str]]) -> None:
    ctx, files = shipped
    no_deny = {p: t for p, t in files.items() if p != "k8s/base/default-deny.yaml"}
    assert any("no default-deny NetworkPolicy" in f for f in k8s_checks.run(ctx, no_deny, strict_schema=False))
    broad = _break(
        files,
        "kei-ai",
        '        - podSelector:\n            matchLabels:\n              app.kubernetes.io/name: "ai-service"\n',
        "        - podSelector: {}\n",
    )
    assert any(
        "kei-ai: NetworkPolicy kei-ai: ingress peer {'podSelector': {}} is broader than a catalog edge" in f
        for f in k8s_checks.run(ctx, broad, strict_schema=False)
    )


def test_egress_to_the_internet_must_keep_the_private_ranges_closed(
    shipped: tuple[RenderContext, dict[str, str]],
) -> None:
    ctx, files = shipped
    broken = _break(files, "streamcore", '              - "10.0.0.0/8"\n', "")
    failures = k8s_checks.run(ctx, broken, strict_schema=False)
    assert any(
        f.startswith(f"{SVC.format('streamcore')}: streamcore: NetworkPolicy streamcore: egress peer {{'ipBlock'")
        for f in failures
    ), failures


def test_replicas_and_a_root_pod_are_failures(shipped: tuple[RenderContext, dict[str, str]]) -> None:
    ctx, files = shipped
    broken = _break(files, "glitch", "  revisionHistoryLimit: 5\n", "  replicas: 3\n  revisionHistoryLimit: 5\n")
    broken = _break(
        broken, "glitch", "            allowPrivilegeEscalation: false", "            allowPrivilegeEscalation: true"
    )
    failures = k8s_checks.run(ctx, broken, strict_schema=False)
    assert (
        f"{SVC.format('glitch')}: glitch: Deployment sets replicas, but its HorizontalPodAutoscaler owns the count"
        in failures
    )
    assert any("glitch: container glitch securityContext.allowPrivilegeEscalation must be False" in f for f in failures)


def test_kustomizations_that_miss_a_file_or_patch_a_missing_object_are_failures(
    shipped: tuple[RenderContext, dict[str, str]],
) -> None:
    ctx, files = shipped
    base = "k8s/base/kustomization.yaml"
    unlisted = {**files, base: files[base].replace('  - "services/glitch.yaml"\n', "")}
    assert f"{base}: platform: does not list k8s/base/services/glitch.yaml" in k8s_checks.run(
        ctx, unlisted, strict_schema=False
    )
    patch = "k8s/overlays/dev/autoscaling-patch.yaml"
    glitch = 'name: "glitch"\n  namespace: "nexus-cos"\nspec:\n  minReplicas: 1\n  maxReplicas: 2\n'
    assert glitch in files[patch]
    stray = {**files, patch: files[patch].replace(glitch, glitch.replace("glitch", "glitch-v2"))}
    assert (
        f"{patch}: glitch-v2: patches HorizontalPodAutoscaler glitch-v2, which the base does not have"
        in k8s_checks.run(ctx, stray, strict_schema=False)
    )
    inverted = {**files, patch: files[patch].replace(glitch, glitch.replace("maxReplicas: 2", "maxReplicas: 0"))}
    assert k8s_checks.run(ctx, inverted, strict_schema=False) == [
        f"{patch}: glitch: minReplicas 1 is not between 1 and maxReplicas 0"
    ]


def test_unparsable_yaml_is_a_failure_not_a_crash(shipped: tuple[RenderContext, dict[str, str]]) -> None:
    ctx, files = shipped
    broken = _break(files, "scheduler", "kind: Service\n", "kind: [Service\n")
    assert any(
        f.startswith(f"{SVC.format('scheduler')}: scheduler: does not parse") for f in k8s_checks.run(ctx, broken)
    )


def test_a_component_file_that_does_not_parse_is_a_failure(shipped: tuple[RenderContext, dict[str, str]]) -> None:
    """Of the components' files the Kubernetes checks read only the Kustomizations (the rules and
    monitors are not unmarshalled on every run: k8s_checks.KUSTOMIZATIONS); each must still parse."""
    ctx, files = shipped
    alerts = "k8s/components/monitoring/alerts.yaml"
    assert k8s_checks.run(ctx, files) == []
    torn = {**files, alerts: files[alerts][: len(files[alerts]) // 2] + "\n  - [unclosed\n"}
    assert any(f.startswith(f"{alerts}: platform: does not parse") for f in k8s_checks.run(ctx, torn))


def test_a_kept_outcome_is_checked_again_when_a_port_it_looked_up_changed(
    shipped: tuple[RenderContext, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each service's file is checked alone and its outcome kept by the file, its own entry and
    the platform's settings: an edit re-checks only the files it changed. A dependency's port is
    another service's entry: the outcome holds the ports it looked up, and one that changed sends
    the file through the checks again (a stale URL is caught, not taken from the last run)."""
    ctx, files = shipped
    checked: list[str] = []
    real = k8s_checks._check_service

    def counting(ctx, name, path, text, ports):  # type: ignore[no-untyped-def]
        checked.append(name)
        return real(ctx, name, path, text, ports)

    monkeypatch.setattr(k8s_checks, "OUTCOMES", k8s_checks._Outcomes(k8s_checks.OUTCOMES.salt))  # none kept yet
    monkeypatch.setattr(k8s_checks, "DEFAULT", SchemaValidator())  # no whole run known to have passed
    assert k8s_checks.run(ctx, files) == []  # every outcome kept (here; a run keeps them in the user's cache)
    edited = _break(
        files, "ledger-mgr", "      port: 3022\n      targetPort: http", "      port: 3997\n      targetPort: http"
    )
    monkeypatch.setattr(k8s_checks, "_check_service", counting)
    assert any("ledger-mgr: Service ports [3997]" in f for f in k8s_checks.run(ctx, edited, strict_schema=False))
    assert checked == ["ledger-mgr"]  # the others' files and entries are as they were
    checked.clear()
    moved = load_catalog_text(CATALOG.read_text(encoding="utf-8").replace("port: 3022", "port: 3099", 1))
    assert moved.catalog.services["ledger-mgr"].port == 3099
    stale = {**render(moved)[1], "k8s/base/services/billing-service.yaml": files[SVC.format("billing-service")]}
    failures = k8s_checks.run(RenderContext(moved.catalog, moved.plan), stale, strict_schema=False)
    assert f"{SVC.format('billing-service')}: billing-service: LEDGER_MGR_URL is 'http://ledger-mgr:3022', not " in (
        " ".join(failures)
    ), failures
    assert "billing-service" in checked  # its file and entry were the same; ledger-mgr's port was not


def test_checks_across_files_that_passed_with_the_same_outcomes_read_no_outcome_again(
    shipped: tuple[RenderContext, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks across files (completeness, policy against the edges, waves, critical paths)
    take each service's outcome; keyed by the outcomes' bytes, the other files and the catalog
    but the services' descriptions, they passed once and are not run again when those are the
    same: a description edit re-checks its service's file alone and unmarshals no outcome. A
    catalog change the manifests do not follow (an edge no policy allows) runs them, and fails."""
    ctx, files = shipped
    monkeypatch.setattr(k8s_checks, "OUTCOMES", k8s_checks._Outcomes(k8s_checks.OUTCOMES.salt))
    monkeypatch.setattr(k8s_checks, "DEFAULT", SchemaValidator())
    assert k8s_checks.run(ctx, files) == []
    across: list[int] = []
    checked: list[str] = []
    real_complete, real_check, real_get = k8s_checks._complete, k8s_checks._check_service, k8s_checks.OUTCOMES.get
    monkeypatch.setattr(k8s_checks, "_complete", lambda c, f, i: across.append(1) or real_complete(c, f, i))
    monkeypatch.setattr(
        k8s_checks, "_check_service", lambda c, n, p, t, ports: checked.append(n) or real_check(c, n, p, t, ports)
    )
    unmarshalled: list[bytes] = []
    monkeypatch.setattr(k8s_checks.OUTCOMES, "get", lambda key: unmarshalled.append(key) or real_get(key))

    text = CATALOG.read_text(encoding="utf-8")
    assert text.count("description: Financial ledger\n") == 1
    described = load_catalog_text(text.replace("description: Financial ledger\n", "description: The ledger\n"))
    d_ctx, d_files = render(described)
    assert d_files[SVC.format("ledger-mgr")] != files[SVC.format("ledger-mgr")]  # an annotation
    assert k8s_checks.run(d_ctx, d_files) == []
    assert checked == ["ledger-mgr"] and across == [] and unmarshalled == []

    # ledger-mgr also calls auth-service now, and no manifest says so: the catalog is not the same
    signed = "      key-service: hard          # ledger entries are signed\n"
    assert text.count(signed) == 1
    edged = load_catalog_text(text.replace(signed, signed + "      auth-service: hard\n"))
    e_ctx = RenderContext(edged.catalog, edged.plan)
    failures = k8s_checks.run(e_ctx, files)
    assert across == [1] and any("ledger-mgr" in f and "auth-service" in f for f in failures), failures

    # the key, for the very same outcomes and files: the descriptions are not in it, the rest of the catalog is
    paths = sorted(p for p in files if p.startswith(k8s_checks.READS) and p.endswith(".yaml"))
    owned = {render_k8s.service_path(n): n for n in ctx.catalog.services}
    values = {n: n.encode() for n in ctx.catalog.services}

    def key(c: RenderContext) -> str:
        return k8s_checks._across_key(c, files, paths, owned, values, True, None)

    moved = load_catalog_text(text.replace("port: 3022", "port: 3099", 1))
    assert moved.catalog.services["ledger-mgr"].port == 3099
    assert key(ctx) == key(d_ctx) and key(ctx) != key(RenderContext(moved.catalog, moved.plan))


# -- catalog rules on small catalogs -------------------------------------------------------------


def test_the_minimal_catalog_renders_checks_and_builds(minimal: dict[str, Any], tmp_path: Path) -> None:
    ctx, files = render(load_catalog_text(dump(minimal)))
    assert k8s_checks.run(ctx, files) == []
    built = kustomize(write(files, tmp_path))
    assert {d["metadata"]["name"] for d in built["prod"] if d["kind"] == "Deployment"} == {"gateway", "auth", "media"}


def test_catalog_autoscaling_and_resources_overrides_reach_the_manifests(minimal: dict[str, Any]) -> None:
    minimal["services"]["media"]["autoscaling"] = {"min_replicas": 3, "max_replicas": 30, "cpu_percent": 55}
    minimal["services"]["media"]["resources"] = {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }
    ctx, files = render(load_catalog_text(dump(minimal)))
    docs = {(d.kind, d.name): d.data for p, t in files.items() if p.startswith("k8s/base/") for d in documents(p, t)}
    spec = docs[("HorizontalPodAutoscaler", "media")]["spec"]
    assert (
        spec["minReplicas"],
        spec["maxReplicas"],
        spec["metrics"][0]["resource"]["target"]["averageUtilization"],
    ) == (3, 30, 55)
    assert docs[("Deployment", "media")]["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"] == {
        "cpu": "1",
        "memory": "1Gi",
    }
    dev = next(d for d in documents("p", files["k8s/overlays/dev/resources-patch.yaml"]) if d.name == "media").data
    assert dev["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"] == {
        "cpu": "500m",
        "memory": "512Mi",
    }
    assert k8s_checks.run(ctx, files) == []


@pytest.mark.parametrize(
    ("quantity", "cpu", "expected"),
    [
        ("100m", True, "50m"),
        ("1", True, "500m"),
        ("0.25", True, "125m"),
        ("1m", True, "1m"),
        ("128Mi", False, "64Mi"),
        ("1Gi", False, "512Mi"),
        ("1.5Gi", False, "768Mi"),
        ("1Ki", False, "512"),
        ("3", False, "2"),
    ],
)
def test_scale_quantity_rounds_up_in_a_readable_unit(quantity: str, cpu: bool, expected: str) -> None:
    from decimal import Decimal

    assert render_k8s.scale_quantity(quantity, Decimal("0.5"), cpu=cpu) == expected


def test_output_is_the_same_bytes_whatever_the_catalog_order(shipped: tuple[RenderContext, dict[str, str]]) -> None:
    data = yaml.safe_load(CATALOG.read_text())
    rng = random.Random(7)
    for mapping in (data["services"], data["infrastructure"], data["teams"], data["categories"], data["flows"]):
        items = list(mapping.items())
        rng.shuffle(items)
        mapping.clear()
        mapping.update(items)
    for svc in data["services"].values():
        deps = list(svc.get("depends_on", {}).items())
        rng.shuffle(deps)
        svc["depends_on"] = dict(deps)
        rng.shuffle(svc.get("uses", []))
    assert list(data["services"]) != list(yaml.safe_load(CATALOG.read_text())["services"])
    _, files = render(load_catalog_text(dump(data)))
    assert files == shipped[1]
    assert list(files) == list(shipped[1])


NASTY = (
    "Ünïcode “quotes” {{ not jinja }} {% raw %} \"double\" 'single' key: value # not a comment\nsecond line\r\n\tand "
    "NEL\x85 LS\u2028 DEL\x7f 😀 "
)


def _description_survives(minimal: dict[str, Any], text: str) -> None:
    minimal["services"]["auth"]["description"] = text
    # ASCII-only YAML: PyYAML's dumper writes some characters (NEL) raw, and its reader then folds them
    loaded = load_catalog_text(yaml.safe_dump(minimal, allow_unicode=False))
    assert loaded.catalog.services["auth"].description == text
    ctx, files = render(loaded)
    for loader in (yaml.CSafeLoader, yaml.SafeLoader):
        deployment = list(yaml.load_all(files[SVC.format("auth")], Loader=loader))[3]
        assert deployment["kind"] == "Deployment"
        assert deployment["metadata"]["annotations"]["nexus.dev/description"] == text
    assert k8s_checks.run(ctx, files) == []


def test_a_nasty_description_survives_intact_and_valid(minimal: dict[str, Any]) -> None:
    _description_survives(minimal, NASTY)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40).filter(str.strip))
def test_any_description_survives_intact_and_valid(minimal: dict[str, Any], text: str) -> None:
    _description_survives(dict(minimal, services={k: dict(v) for k, v in minimal["services"].items()}), text)


# -- a managed (external) instance -------------------------------------------------------------------


def test_a_managed_instance_has_no_statefulset_and_its_users_reach_it_by_host_and_port(minimal: dict) -> None:
    """PostgreSQL on RDS: no server of its own, only the Job that makes its users (with its
    ServiceAccount, ConfigMap and NetworkPolicy); its user's URL, egress, Sidecar host and a
    ServiceEntry point at the managed host and port; every check (policy == edges) passes;
    without the egress rule the check names the missing edge."""
    minimal["platform"]["mesh"] = "istio"
    minimal["infrastructure"]["postgres"]["external"] = {"host": "db.example.com", "port": 6432, "secret": "rds"}
    loaded = load_catalog_text(dump(minimal))
    ctx = RenderContext(loaded.catalog, loaded.plan)
    files = {**render_k8s.render(ctx), **render_mesh.render(ctx)}
    assert [p for p in files if "/infrastructure/" in p] == ["k8s/base/infrastructure/postgres.yaml"]
    provisioning = [d for d in yaml.safe_load_all(files["k8s/base/infrastructure/postgres.yaml"]) if d]
    names = [d["metadata"]["name"] for d in provisioning]
    assert [d["kind"] for d in provisioning] == ["ServiceAccount", "ConfigMap", "Job", "NetworkPolicy"]
    assert names[2].startswith("postgres-provision-") and {*names[:2], names[3]} == {"postgres-provision"}
    job = provisioning[2]["spec"]["template"]
    env = {e["name"]: e["value"] for e in job["spec"]["containers"][0]["env"]}
    assert (env["PGHOST"], env["PGPORT"]) == ("db.example.com", "6432")
    mounted = [s["secret"]["name"] for s in job["spec"]["volumes"][1]["projected"]["sources"]]
    assert mounted == ["rds", "postgres.auth"]  # the owners' administrator, then each user's own
    egress = provisioning[3]["spec"]["egress"]
    assert egress[1] == {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}],
                         "ports": [{"protocol": "TCP", "port": 6432}]}  # fmt: skip
    # a new host is a new Job: its pod template cannot change in place
    moved = load_catalog_text(dump(minimal).replace("db.example.com", "db2.example.com"))
    again = render_k8s.render(RenderContext(moved.catalog, moved.plan))["k8s/base/infrastructure/postgres.yaml"]
    assert provisioning[2]["metadata"]["name"] not in again
    docs = {
        (d["kind"], d["metadata"]["name"]): d
        for t in files.values()
        for d in yaml.safe_load_all(t)
        if d and "metadata" in d
    }
    assert docs[("ConfigMap", "auth-config")]["data"]["POSTGRES_URL"] == "postgresql://auth@db.example.com:6432/auth"
    egress = docs[("NetworkPolicy", "auth")]["spec"]["egress"]
    assert {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}],
            "ports": [{"protocol": "TCP", "port": 6432}]} in egress  # fmt: skip
    assert "./db.example.com" in docs[("Sidecar", "auth")]["spec"]["egress"][0]["hosts"]
    entry = docs[("ServiceEntry", "postgres")]["spec"]
    assert (entry["hosts"], entry["ports"][0]["number"], entry["location"]) == (
        ["db.example.com"],
        6432,
        "MESH_EXTERNAL",
    )
    assert ("StatefulSet", "postgres") not in docs and ("NetworkPolicy", "postgres-ingress") not in docs
    assert k8s_checks.run(ctx, files, strict_schema=False) == []
    # the Job's egress to the instance is an edge of its own: closing it is named as such
    infra = "k8s/base/infrastructure/postgres.yaml"
    failures = k8s_checks.run(
        ctx, {**files, infra: files[infra].replace("port: 6432", "port: 6431")}, strict_schema=False
    )
    assert (
        f"{infra}: postgres-provision: egress postgres-provision -> postgres is a catalog edge but no NetworkPolicy "
        "allows it"
    ) in failures

    path = render_k8s.service_path("auth")
    closed = files[path].replace("port: 6432", "port: 6433")
    failures = k8s_checks.run(ctx, {**files, path: closed}, strict_schema=False)
    assert f"{path}: auth: egress auth -> postgres is a catalog edge but no NetworkPolicy allows it" in failures


def test_the_checks_read_nothing_the_checked_objects_leave_out(
    shipped: tuple[RenderContext, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """k8s_checks.CHECKED keeps of each base object only what the checks read: for hundreds of
    random breakages of base objects (a field removed, or set to something of another type), the
    checks say exactly what they say reading whole objects, and never fail themselves (a
    manifest is read, not trusted). NEXUS_BREAKAGES sets how many (1,500 were run by hand)."""
    from nexus import yamlread

    ctx, files = shipped
    base = sorted(p for p in files if p.startswith(render_k8s.BASE + "/") and p.endswith(".yaml"))
    trimmed = [
        (path, i, doc)
        for path in base
        for i, doc in enumerate(yaml.safe_load_all(files[path]))
        if isinstance(doc, dict) and doc.get("kind") != "Kustomization"
    ]
    rng = random.Random(14)

    def verdict(broken: dict[str, str], checked: dict[str, Any]) -> list[str]:
        monkeypatch.setattr(k8s_checks, "CHECKED", checked)
        monkeypatch.setattr(k8s_checks, "BASE_FILES", yamlread.Memo(k8s_checks.read_base))
        return k8s_checks.run(ctx, broken, strict_schema=False, validator=k8s_checks.SchemaValidator())

    kinds = set()
    for _ in range(int(os.environ.get("NEXUS_BREAKAGES", "300"))):
        path, index, doc = rng.choice(trimmed)
        broken, where = broken_at_random(files, path, index, doc, rng, [0, "x", None, [], {}, 10001, False, "http"])
        assert verdict(broken, k8s_checks.CHECKED) == verdict(broken, {}), (path, doc.get("kind"), where)
        kinds.add(doc["kind"])
    assert {"Deployment", "Service", "ConfigMap", "StatefulSet", "NetworkPolicy"} <= kinds


def test_base_files_read_on_every_core_are_what_reading_them_in_turn_gives(
    shipped: tuple[RenderContext, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """k8s_checks.prefetch (forked workers) keeps for each base file exactly what read_base
    gives in turn (objects and schema verdicts), and leaves out a file that does not parse."""
    import marshal

    from nexus import parallel, yamlread

    ctx, files = shipped
    broken = f"{render_k8s.BASE}/services/zz-broken.yaml"
    files = {**files, broken: "kind: [unclosed\n"}
    fresh = yamlread.Memo(k8s_checks.read_base)
    monkeypatch.setattr(k8s_checks, "BASE_FILES", fresh)
    monkeypatch.setattr(k8s_checks, "PARALLEL_FROM", 2)
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 2)
    k8s_checks.prefetch(files)
    base = [p for p in files if k8s_checks.in_base(p) and p != broken]
    assert len(base) > 40 and fresh.added and fresh.key(files[broken]) not in fresh.entries
    for path in base:
        assert marshal.loads(fresh.entries[fresh.key(files[path])]) == k8s_checks.read_base(files[path])
    failures = k8s_checks.run(ctx, files)
    assert f"{broken}: platform: does not parse" in " ".join(failures)


def test_the_checks_across_files_in_a_worker_say_what_they_say_in_turn(
    shipped: tuple[RenderContext, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a large catalog k8s_checks.start runs the checks across files in a forked worker
    (parallel.beside) while the other checks run: the same failures in the same order as in
    turn, and a pass is remembered in this process's validator, not only in the worker's."""
    from nexus import parallel

    ctx, files = shipped
    path = f"{render_k8s.BASE}/services/auth-service.yaml"
    broken = {**files, path: files[path].replace("targetPort: http", "targetPort: web", 1)}
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 2)
    here: list[int] = []  # a worker's appends stay in the worker
    real = k8s_checks._run
    monkeypatch.setattr(k8s_checks, "_run", lambda *a, **k: here.append(os.getpid()) or real(*a, **k))

    def checked(tree: dict[str, str], parallel_from: int) -> tuple[list[str], k8s_checks.SchemaValidator]:
        monkeypatch.setattr(k8s_checks, "PARALLEL_FROM", parallel_from)
        validator = k8s_checks.SchemaValidator()
        return k8s_checks.start(ctx, tree, validator=validator)(), validator

    in_turn, _ = checked(broken, 10**9)
    assert here == [os.getpid()] and any("auth-service: Service ports" in f for f in in_turn), in_turn
    forked, _ = checked(broken, 1)
    assert here == [os.getpid()] and forked == in_turn
    passed, validator = checked(files, 1)
    assert passed == [] and len(validator.seen) == 2 and here == [os.getpid()]  # the run's key, the checks across
    assert k8s_checks.run(ctx, files, validator=validator) == [] and here == [os.getpid()]  # remembered: not run again


def test_the_kustomizations_read_by_their_kind_are_those_read_whole(
    shipped: tuple[RenderContext, dict[str, str]],
) -> None:
    """k8s_checks.kustomizations reads a document whole only where its kind (yamlread.heading)
    is Kustomization or cannot be told: it finds what reading every document whole finds, in
    every k8s file outside the base, and a document it reads only the head of still has to parse."""
    from nexus import yamlread

    _, files = shipped
    others = [p for p in files if p.startswith("k8s/") and p.endswith(".yaml") and not k8s_checks.in_base(p)]
    assert len(others) > 10
    found = 0
    for path in others:
        whole = [d for d in yaml.safe_load_all(files[path]) if isinstance(d, dict) and d.get("kind") == "Kustomization"]
        assert k8s_checks.kustomizations(files[path]) == whole, path
        found += len(whole)
    assert found >= 3  # the overlays' (a component is kind: Component)
    with pytest.raises(yaml.YAMLError):
        k8s_checks.kustomizations("apiVersion: v1\nkind: ConfigMap\ndata: [unclosed\n")
    anchored = "meta: &m {a: 1}\nkind: Kustomization\nresources: [a.yaml]\n"
    assert k8s_checks.kustomizations(anchored) == [yamlread.load(anchored)]
