"""Adopting the tree into an existing platform: each app takes the platform's own values files first and this
tree's overlay last, rendered with the real charts (tests/fix_gitops.py) — everything the platform sets
survives (ingress, Backstage's app-config, Dex's issuer, connectors and static users, SonarQube's plugins,
Grafana's server settings…), and the database wiring is ours even where the platform's file names the old
server."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.fix_gitops import (
    ROOT_VALUES,
    SNIPPETS,
    WORKLOADS,
    Renderer,
    Tree,
    _docs,
    pod_template,
    root_helm_args,
    row_fuses,
)

ADOPTING = ROOT / "docs" / "adopting.md"
OLD = "old-server-from-platform-values"  # where the platform's files still point; must never render
# Per chart app: (path in the platform's repository, its values). Every "kept-…" string must render.
PLATFORM: dict[str, tuple[str, dict[str, Any]]] = {
    "backstage": ("K8s/backstage/backstage/values.yaml", {
        "ingress": {"enabled": True, "host": "kept-backstage.example.org"},
        "backstage": {
            "appConfig": {"app": {"title": "kept-portal-title"},
                          "auth": {"providers": {"github": {"production": {"clientId": "kept-github-client"}}}},
                          "backend": {"database": {"connection": {"host": OLD, "database": OLD}}}},
            "extraEnvVars": [{"name": "KEPT_LOG_LEVEL", "value": "debug"}],
        },
    }),
    "sonarqube": ("K8s/cicd/sonarqube/values.yaml", {
        "ingress": {"enabled": True, "hosts": [{"name": "kept-sonarqube.example.org"}]},
        "plugins": {"install": ["https://example.org/kept-sonar-plugin.jar"]},
        "sonarProperties": {"sonar.kept.property": "true"},
        "jdbcOverwrite": {"jdbcUrl": f"jdbc:postgresql://{OLD}:5432/sonarDB"},
    }),
    "argo-workflows": ("K8s/cicd/argo-workflows/values.yaml", {
        "server": {"ingress": {"enabled": True, "hosts": ["kept-argo.example.org"]}},
        "controller": {"persistence": {"postgresql": {"host": OLD}}},
    }),
    "grafana": ("K8s/observability/grafana/values.yaml", {
        "ingress": {"enabled": True, "hosts": ["kept-grafana.example.org"]},
        "grafana.ini": {"server": {"root_url": "https://kept-grafana.example.org"}, "database": {"host": OLD}},
    }),
}  # fmt: skip
# The kustomize apps read apps/<name>/platform-values.yaml, which the platform links to its own file.
KUSTOMIZE: dict[str, dict[str, Any]] = {
    "dex": {
        "config": {"issuer": "https://kept-dex.example.org",
                   "connectors": [{"type": "github", "id": "kept-github", "name": "GitHub",
                                   "config": {"clientID": "kept-id", "clientSecret": "$GITHUB_SECRET"}}],
                   "staticPasswords": [{"email": "kept-admin@example.org", "username": "admin",
                                        "hash": "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W",
                                        "userID": "08a8684b-db88-4b73-90a9-3cd1661f5466"}],
                   "storage": {"type": "sqlite3", "config": {"host": OLD}}},
        "ingress": {"enabled": True, "hosts": [{"host": "kept-dex.example.org",
                                                "paths": [{"path": "/", "pathType": "ImplementationSpecific"}]}]},
    },
    "policy-reporter": {"metrics": {"enabled": True}, "database": {"host": OLD},
                        "podLabels": {"kept": "kept-policy-reporter-label"}},
}  # fmt: skip


def rendered(tree: Tree, app: str) -> str:
    """An app's rendered objects as one text, Secrets' data decoded (Dex keeps its config in one)."""
    objects = []
    for placed in tree.objects:
        if placed.app != app:
            continue
        obj = dict(placed.obj)
        if obj["kind"] == "Secret" and obj.get("data"):
            obj["data"] = {k: base64.b64decode(v).decode(errors="replace") for k, v in obj["data"].items()}
        objects.append(obj)
    return json.dumps(objects, ensure_ascii=False)


def kept(values: Any) -> list[str]:
    """Every "kept-…" string in the platform's values (the markers that must render)."""
    return sorted(set(re.findall(r"kept-[A-Za-z0-9.-]*[A-Za-z0-9]", json.dumps(values))))


@pytest.fixture(scope="module")
def adopted(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    platform = tmp_path_factory.mktemp("platform-repo")
    for path, values in PLATFORM.values():
        (platform / path).parent.mkdir(parents=True, exist_ok=True)
        (platform / path).write_text(yaml.safe_dump(values))
    for app, values in KUSTOMIZE.items():
        (platform / f"{app}.platform-values.yaml").write_text(yaml.safe_dump(values))
    renderer = Renderer(tmp_path_factory.mktemp("gitops-adopted"), platform=platform)
    sets = [f'apps.{app}.platformValues=["{path}"]' for app, (path, _) in PLATFORM.items()]
    extra = [arg for s in sets for arg in ("--set-json", s)]
    return renderer.tree(row_fuses((True, True, True, True)), "full", *extra)


@pytest.mark.parametrize("app", [*PLATFORM, *KUSTOMIZE])
def test_the_platforms_values_survive_and_the_database_is_ours(adopted: Tree, app: str) -> None:
    values = PLATFORM[app][1] if app in PLATFORM else KUSTOMIZE[app]
    text = rendered(adopted, app)
    markers = kept(values)
    assert markers, "the test's platform values carry no marker"
    lost = [m for m in markers if m not in text]
    assert lost == [], f"{app}: the platform's values were lost: {lost}"
    assert OLD not in text, f"{app}: the platform's old database settings won over the overlay's"


def test_the_overlay_still_wires_each_app_to_its_tenant(adopted: Tree) -> None:
    backstage = [p.obj for p in adopted.of("ConfigMap", "backstage") if "app-config" in json.dumps(p.obj)]
    config = yaml.safe_load(next(iter(backstage[0]["data"].values())))
    assert config["backend"]["database"]["connection"]["host"] == "${POSTGRES_HOST}"
    assert config["app"]["title"] == "kept-portal-title"  # both in the one app-config
    [dex] = [p.obj for p in adopted.of("Secret", "dex") if "config.yaml" in p.obj.get("data", {})]
    dex_config = yaml.safe_load(base64.b64decode(dex["data"]["config.yaml"]))
    assert dex_config["storage"]["type"] == "postgres" and dex_config["storage"]["config"]["database"] == "dex"
    assert dex_config["issuer"] == "https://kept-dex.example.org" and dex_config["connectors"][0]["id"] == "kept-github"


@pytest.mark.parametrize(("app", "path", "says"), [
    ("dex", "K8s/backstage/dex/values.yaml", "apps/dex/platform-values.yaml"),
    ("backstage", "/etc/values.yaml", "a path from the root of repoURL"),
    ("backstage", "../other/values.yaml", "a path from the root of repoURL"),
])  # fmt: skip
def test_platform_values_the_tree_cannot_apply_fail_the_render(tmp_path: Path, app: str, path: str,
                                                                says: str) -> None:  # fmt: skip
    renderer = Renderer(tmp_path)
    with pytest.raises(AssertionError, match=says.replace(".", r"\.")):
        renderer.root(row_fuses((True, True, True, True)), "full", SNIPPETS / "root", "--set-json",
                      f'apps.{app}.platformValues=["{path}"]')  # fmt: skip


def overlay_lists(values: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose value is a list, in an overlay (not descending into the lists)."""
    found = []
    for key, value in (values or {}).items():
        path = f"{prefix}{key}"
        if isinstance(value, list):
            found.append(path)
        elif isinstance(value, dict):
            found += overlay_lists(value, f"{path}.")
    return found


def test_the_list_keys_each_overlay_sets_are_the_documented_ones() -> None:
    rows = []
    for app in sorted(ROOT_VALUES["apps"]):
        keys = overlay_lists(yaml.safe_load((SNIPPETS / "apps" / app / "values.yaml").read_text()))
        rows.append(f"| {app} | {', '.join(f'`{k}`' for k in sorted(keys)) or '—'} |")
    table = "\n".join(["| app | list keys the overlay sets |", "|---|---|", *rows])
    documented = ADOPTING.read_text().split("<!-- overlay-lists: generated by tests/func/test_adopting.py -->\n")[1]
    assert documented.split("\n<!-- /overlay-lists -->")[0] == table, f"docs/adopting.md should say:\n{table}"


def test_existing_namespaces_and_application_names_are_left_alone(tmp_path: Path) -> None:
    renderer = Renderer(tmp_path)
    docs = renderer.root(row_fuses((True, True, True, True)), "full", SNIPPETS / "root", "--set",
                         "createNamespaces=false", "--set", "applicationPrefix=sharedpg-")  # fmt: skip
    default = renderer.root(row_fuses((True, True, True, True)))
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"] == ["database"]
    apps = {d["metadata"]["name"]: d["spec"]["destination"]["namespace"] for d in docs if d["kind"] == "Application"}
    before = {d["metadata"]["name"]: d["spec"]["destination"]["namespace"] for d in default
              if d["kind"] == "Application"}  # fmt: skip
    assert apps == {f"sharedpg-{name}": ns for name, ns in before.items()}
    assert not set(apps) & set(ROOT_VALUES["apps"]), "a child Application still takes an app's own name"


def test_the_applicationset_example_renders_the_root(tmp_path: Path) -> None:
    """docs/adopting.md's ApplicationSet: its one element filled into its template as Argo CD's go template
    does for these plain fields (a stand-in: no ApplicationSet controller runs here), then the resulting
    Application's source rendered as Argo CD would, with its valuesObject over the chart's values."""
    text = ADOPTING.read_text().split("<!-- applicationset-example: rendered by tests/func/test_adopting.py -->")[1]
    appset = yaml.safe_load(text.split("```yaml\n", 1)[1].split("```", 1)[0])
    [element] = appset["spec"]["generators"][0]["list"]["elements"]
    template = json.dumps(appset["spec"]["template"])
    for key, value in element.items():
        template = template.replace("{{." + key + "}}", value)
    application = json.loads(template)
    source = application["spec"]["source"]
    assert source["path"] == "k8s-snippets/root" and source["repoURL"] == ROOT_VALUES["repoURL"]
    renderer = Renderer(tmp_path)
    docs = renderer.root({}, "full", ROOT / source["path"], *root_helm_args(application, tmp_path))
    names = {d["metadata"]["name"] for d in docs if d["kind"] == "Application"}
    assert {"sharedpg-shared-postgresql", "sharedpg-backstage", "sharedpg-sonarqube"} <= names, names
    [backstage] = [d for d in docs if d["kind"] == "Application" and d["metadata"]["name"] == "sharedpg-backstage"]
    files = next(s for s in backstage["spec"]["sources"] if "chart" in s)["helm"]["valueFiles"]
    assert files == ["$values/K8s/backstage/backstage/values.yaml", "$values/k8s-snippets/apps/backstage/values.yaml"]


def sharedpg_containers(tree: Tree) -> list[tuple[str, str, str]]:
    """(app, container, image) of every container of every pod the tree renders that runs sharedpg."""
    found = []
    for placed in (p for p in tree.objects if p.kind in WORKLOADS):
        pod = pod_template(placed.obj)
        for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            if "sharedpg" in container.get("image", ""):
                found.append((placed.app, container["name"], container["image"]))
    return found


@pytest.mark.parametrize(("sets", "expected"), [
    (["image.repository=registry.example.org/platform/sharedpg", "image.tag=0.2.0"],
     "registry.example.org/platform/sharedpg:0.2.0"),
    (["image.repository=registry.example.org/sharedpg", "image.digest=sha256:" + "ab" * 32],
     "registry.example.org/sharedpg@sha256:" + "ab" * 32),
])  # fmt: skip
def test_the_image_is_set_in_one_place(tmp_path: Path, sets: list[str], expected: str) -> None:
    """Changing the root values' image changes every rendered container that runs sharedpg, in every kind of
    source (charts, kustomizations), and no other."""
    renderer = Renderer(tmp_path)
    everything = row_fuses((True, True, True, True))
    before = sharedpg_containers(renderer.tree(everything))
    assert {image for _, _, image in before} == {"sharedpg:0.1.0"}
    apps = {app for app, _, _ in before}
    assert apps >= {"shared-postgresql", "sharedpg-bootstrap", "sharedpg-monitoring", *ROOT_VALUES["apps"]}, apps
    after = sharedpg_containers(renderer.tree(everything, "full", *(a for s in sets for a in ("--set", s))))
    assert [(a, c) for a, c, _ in after] == [(a, c) for a, c, _ in before], "a container appeared or went"
    assert {image for _, _, image in after} == {expected}


def test_a_digest_that_is_not_one_fails_the_render(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"image\.digest \"latest\""):
        Renderer(tmp_path).root(row_fuses((True, False, False, False)), "full", SNIPPETS / "root", "--set",
                                "image.digest=latest")  # fmt: skip


@pytest.mark.parametrize(("repo", "revision", "path"), [
    (None, None, None),  # as shipped
    ("https://git.internal.example/platform/infra.git", "release-7", "platform/gitops/k8s-snippets/root"),
])  # fmt: skip
def test_the_repository_is_named_once_in_the_root_application(tmp_path: Path, repo: str | None, revision: str | None,
                                                               path: str | None) -> None:  # fmt: skip
    """Every child Application reads the repository, revision and folder the root Application names, whatever
    the root values say: moving the tree is one edit."""
    [application] = _docs((SNIPPETS / "argocd" / "root-application.yaml").read_text())
    source = application["spec"]["source"]
    source.update({k: v for k, v in (("repoURL", repo), ("targetRevision", revision), ("path", path)) if v})
    docs = Renderer(tmp_path).root({}, "full", SNIPPETS / "root", *root_helm_args(application, tmp_path))
    children = [d for d in docs if d["kind"] == "Application"]
    assert len(children) > 4
    tree_path = source["path"].rsplit("/", 1)[0]
    for child in children:
        ours = [s for s in child["spec"].get("sources", [child["spec"].get("source")]) if "chart" not in s]
        assert ours, child["metadata"]["name"]
        for own in ours:
            assert (own["repoURL"], own["targetRevision"]) == (source["repoURL"], source["targetRevision"])
            assert "path" not in own or own["path"].startswith(f"{tree_path}/"), own
        files = [f for s in child["spec"].get("sources", []) for f in s.get("helm", {}).get("valueFiles", [])]
        assert all(f.startswith(f"$values/{tree_path}/") for f in files), files
