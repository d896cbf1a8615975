"""The cluster budget as code: for every fuse row of both profiles, the CPU and memory that everything the
tree renders asks for (requests) and may take (limits), per stack and in all, against the plan's cluster of
about 12 Gi (docs/plan.md, "Capacity notes"). The table in docs/budget.md is this test's output; the test
fails when a row does not fit, naming the largest consumers.

A pod's figure is what the scheduler counts: the larger of its containers' sum and its largest init
container (Kubernetes' effective request), times its replicas. Deployments and StatefulSets run all the
time; Jobs and CronJobs (the bootstrap, the admin secret, check-pool) run now and then and are listed apart.
A container without a limit has no ceiling: the test names it, since a budget cannot hold it.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.fix_gitops import ROOT_VALUES, SNIPPETS, STACKS, Renderer, Tree, _docs, pod_template, row_fuses

CLUSTER_MEMORY_GI = 12.0  # docs/plan.md, "Capacity notes": "cluster budget about 12 Gi of memory"
BUDGET = ROOT / "docs" / "budget.md"
STEADY = ("Deployment", "StatefulSet", "DaemonSet")
TRANSIENT = ("Job", "CronJob")
INFRASTRUCTURE = {"shared-postgresql": "database", "sharedpg-bootstrap": "database", "sharedpg-monitoring": "database"}
_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def cpu(value: Any) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def memory(value: Any) -> float:
    """Bytes."""
    text = str(value)
    for suffix, factor in sorted(_SUFFIX.items(), key=lambda kv: -len(kv[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def pod_figures(pod: dict[str, Any]) -> tuple[list[float], list[str]]:
    """[cpu request, memory request, cpu limit, memory limit] of a pod, and its containers without a limit."""
    unbounded = []

    def of(container: dict[str, Any]) -> list[float]:
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        if "memory" not in limits:
            unbounded.append(container["name"])
        return [cpu(requests.get("cpu", 0)), memory(requests.get("memory", 0)), cpu(limits.get("cpu", 0)),
                memory(limits.get("memory", 0))]  # fmt: skip

    main = [of(c) for c in pod.get("containers", [])]
    init = [of(c) for c in pod.get("initContainers", [])]
    total = [sum(col) for col in zip(*main, strict=True)] if main else [0.0] * 4
    return [max([total[i], *(c[i] for c in init)]) for i in range(4)], unbounded


class Budget:
    def __init__(self, tree: Tree):
        self.steady: dict[str, list[float]] = {}
        self.transient: list[str] = []
        self.consumers: list[tuple[float, str]] = []
        self.unbounded: list[str] = []
        for placed in tree.objects:
            if placed.kind not in STEADY + TRANSIENT:
                continue
            figures, unbounded = pod_figures(pod_template(placed.obj))
            name = f"{placed.app}/{placed.kind}/{placed.name}"
            if placed.kind in TRANSIENT:
                self.transient.append(name)
                continue
            replicas = int(placed.obj["spec"].get("replicas", 1))
            figures = [f * replicas for f in figures]
            stack = INFRASTRUCTURE.get(placed.app) or ROOT_VALUES["apps"][placed.app]["stack"]
            self.steady[stack] = [a + b for a, b in zip(self.steady.get(stack, [0.0] * 4), figures, strict=True)]
            self.consumers.append((figures[3], name))
            self.unbounded += [f"{name}: {c}" for c in unbounded]

    @property
    def total(self) -> list[float]:
        return [sum(col) for col in zip(*self.steady.values(), strict=True)] if self.steady else [0.0] * 4

    def fits(self) -> bool:
        return not self.unbounded and self.total[3] <= CLUSTER_MEMORY_GI * 2**30

    def largest(self, n: int = 3) -> str:
        return ", ".join(f"{name} {value / 2**30:.2f} Gi" for value, name in sorted(self.consumers, reverse=True)[:n])


ROWS = [(profile, row) for profile in ("full", "pragmatic") for row in itertools.product([False, True], repeat=4)]


@pytest.fixture(scope="module")
def budgets(renderer: Renderer) -> dict[tuple[str, tuple[bool, ...]], Budget]:
    return {(profile, row): Budget(renderer.tree(row_fuses(row), profile)) for profile, row in ROWS}


def _gi(value: float) -> str:
    return f"{value / 2**30:.2f}"


def table(budgets: dict[tuple[str, tuple[bool, ...]], Budget]) -> str:
    lines = ["| profile | fuses on | CPU requests | memory requests (Gi) | CPU limits | memory limits (Gi) | "
             "memory limits per stack (Gi) | largest (memory limit) | fits 12 Gi |",
             "|---|---|---:|---:|---:|---:|---|---|---|"]  # fmt: skip
    for (profile, row), budget in budgets.items():
        on = ", ".join(s for s, v in zip(STACKS, row, strict=True) if v) or "none"
        cpu_req, mem_req, cpu_lim, mem_lim = budget.total
        stacks = ", ".join(f"{s} {_gi(v[3])}" for s, v in sorted(budget.steady.items())) or "—"
        lines.append(f"| {profile} | {on} | {cpu_req:.2f} | {_gi(mem_req)} | {cpu_lim:.2f} | {_gi(mem_lim)} | "
                     f"{stacks} | {budget.largest(1) or '—'} | {'yes' if budget.fits() else 'NO'} |")  # fmt: skip
    return "\n".join(lines)


def test_every_row_fits_the_plans_cluster(budgets: dict[tuple[str, tuple[bool, ...]], Budget]) -> None:
    for (profile, row), budget in budgets.items():
        assert not budget.unbounded, f"{profile} {row}: containers without a memory limit: {budget.unbounded}"
        assert budget.fits(), (f"{profile} {row}: {_gi(budget.total[3])} Gi of memory limits, over the plan's "
                               f"{CLUSTER_MEMORY_GI} Gi; largest: {budget.largest()}")  # fmt: skip


def test_the_documented_budget_is_the_rendered_one(budgets: dict[tuple[str, tuple[bool, ...]], Budget]) -> None:
    expected = table(budgets)
    marker = "<!-- budget: generated by tests/func/test_budget.py -->\n"
    text = BUDGET.read_text()
    if os.environ.get("SHAREDPG_WRITE_DOCS") == "1":
        head, rest = text.split(marker)
        BUDGET.write_text(head + marker + expected + "\n" + rest[rest.index("<!-- /budget -->") :])
        text = BUDGET.read_text()
    assert text.split(marker)[1].split("\n<!-- /budget -->")[0] == expected, (
        "docs/budget.md is out of date: SHAREDPG_WRITE_DOCS=1 .venv/bin/python -m pytest tests/func/test_budget.py"
    )


def test_an_oversized_app_fails_naming_it(renderer: Renderer) -> None:
    """The check itself: an overlay that asks for more than the cluster has is caught, and named."""
    tree = renderer.tree(row_fuses((True, True, True, True)))
    for placed in tree.objects:
        if placed.app == "sonarqube" and placed.kind == "StatefulSet":
            pod = pod_template(placed.obj)
            pod["containers"][0].setdefault("resources", {}).setdefault("limits", {})["memory"] = "16Gi"
            placed.obj["spec"]["template"]["spec"] = pod
    budget = Budget(tree)
    assert not budget.fits() and budget.largest(1).startswith("sonarqube/StatefulSet/"), budget.largest()


# The plan's per-app figures (docs/plan.md, "Capacity notes"), as each rendered main container must carry
# them: (app, kind, container, cpu request, memory request, cpu limit, memory limit). SonarQube's memory
# limit is 2 Gi where the plan says 1 Gi (apps/sonarqube/values.yaml says why).
PLAN = [
    ("backstage", "Deployment", "backstage-backend", "300m", "512Mi", "400m", "768Mi"),
    ("sonarqube", "StatefulSet", "sonarqube", "800m", "768Mi", "1", "2Gi"),
    ("argo-workflows", "Deployment", "controller", "100m", "256Mi", "250m", "384Mi"),
    ("argo-workflows", "Deployment", "argo-server", "100m", "256Mi", "250m", "384Mi"),
    ("grafana", "Deployment", "grafana", "150m", "256Mi", "200m", "256Mi"),
    ("policy-reporter", "Deployment", "policy-reporter", "100m", "128Mi", "100m", "192Mi"),
    ("dex", "Deployment", "dex", "50m", "128Mi", "100m", "128Mi"),
]


@pytest.mark.parametrize(("app", "kind", "container", "cpu_req", "mem_req", "cpu_lim", "mem_lim"), PLAN)
def test_the_plans_capacity_reaches_each_app(renderer: Renderer, app: str, kind: str, container: str, cpu_req: str,
                                             mem_req: str, cpu_lim: str, mem_lim: str) -> None:  # fmt: skip
    tree = renderer.tree(row_fuses((True, True, True, True)))
    found = [c for p in tree.of(kind, app) for c in pod_template(p.obj)["containers"] if c["name"] == container]
    assert found, f"{app}: no {kind} container {container}"
    resources = found[0]["resources"]
    assert (cpu(resources["requests"]["cpu"]), memory(resources["requests"]["memory"])) == (
        cpu(cpu_req),
        memory(mem_req),
    )
    assert (cpu(resources["limits"]["cpu"]), memory(resources["limits"]["memory"])) == (cpu(cpu_lim), memory(mem_lim))


def test_the_plans_runtime_settings_reach_the_apps(renderer: Renderer) -> None:
    tree = renderer.tree(row_fuses((True, True, True, True)))
    [backend] = [c for p in tree.of("Deployment", "backstage") for c in pod_template(p.obj)["containers"]]
    assert {"name": "NODE_OPTIONS", "value": "--max-old-space-size=384"} in backend["env"]
    [argo] = [p.obj for p in tree.of("ConfigMap", "argo-workflows") if "parallelism" in str(p.obj.get("data"))]
    config = yaml.safe_load(argo["data"]["config"]) if "config" in argo["data"] else argo["data"]
    assert int(config["parallelism"]) == 5 and config["persistence"]["archiveTTL"] == "1d"
    properties = " ".join(str(p.obj.get("data")) for p in tree.of("ConfigMap", "sonarqube"))
    assert "sonar.search.javaAdditionalOpts=-Xms512m -Xmx512m" in properties


@pytest.mark.parametrize("profile", ["full", "pragmatic"])
def test_the_database_is_sized_by_the_profile(renderer: Renderer, profile: str) -> None:
    size = ROOT_VALUES["database"]["sizing"][profile]
    tree = renderer.tree(row_fuses((True, True, False, False)), profile)
    [statefulset] = [p.obj for p in tree.of("StatefulSet", "shared-postgresql")]
    [server] = pod_template(statefulset)["containers"]
    assert server["resources"] == {"requests": size["requests"], "limits": size["limits"]}
    settings = dict(a.split("=", 1) for a in server["args"] if "=" in a)
    assert settings["shared_buffers"] == size["sharedBuffers"] and settings["effective_cache_size"] == size[
        "effectiveCacheSize"]  # fmt: skip
    assert len(server["args"]) == 2 * len(settings) and set(server["args"][::2]) == {"-c"}, "a patch hit a -c"
    claim = statefulset["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    assert claim == size["storage"]


def test_the_full_size_is_what_the_manifest_says() -> None:
    """The manifest read alone (kubectl apply -k database/) and the full profile agree: one set of figures."""
    [statefulset] = _docs((SNIPPETS / "database" / "statefulset.yaml").read_text())
    [server] = statefulset["spec"]["template"]["spec"]["containers"]
    full = ROOT_VALUES["database"]["sizing"]["full"]
    settings = dict(a.split("=", 1) for a in server["args"] if "=" in a)
    assert server["resources"] == {"requests": full["requests"], "limits": full["limits"]}
    assert (settings["shared_buffers"], settings["effective_cache_size"]) == (full["sharedBuffers"],
                                                                              full["effectiveCacheSize"])  # fmt: skip
