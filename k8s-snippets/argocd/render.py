"""Print the Argo CD objects for the platform's fuses, as multi-document YAML for `kubectl apply -f -`.

    FUSE_CICD=true FUSE_BACKSTAGE=false python k8s-snippets/argocd/render.py | kubectl apply -f -

Run it with the Python that has sharedpg installed. The fuses are read by sharedpg itself
(`FUSE_<STACK>` or `--fuse STACK=BOOL`), so the rule is the seed's truth table exactly: the database,
its bootstrap Job and the ExternalSecrets are included only when
`sharedpg bootstrap --plan` exits 0 (some fuse is on), and the app set keeps only the active stacks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


def render(extra_args: list[str]) -> list[dict[str, object]]:
    command = [sys.executable, "-m", "sharedpg_tools", "bootstrap", "--plan", "--output", "json", *extra_args]
    plan = subprocess.run(command, capture_output=True, text=True, check=False)
    if plan.returncode not in (0, 1):
        sys.stderr.write(plan.stderr)
        raise SystemExit(plan.returncode)
    fuses = json.loads(plan.stdout)["fuses"]
    objects: list[dict[str, object]] = []
    if plan.returncode == 0:  # the shared database is needed
        for name in ("database.yaml", "bootstrap.yaml", "externalsecrets.yaml"):
            objects.append(yaml.safe_load((HERE / name).read_text()))
    appset = yaml.safe_load((HERE / "apps.yaml").read_text())
    generator = appset["spec"]["generators"][0]["list"]
    generator["elements"] = [e for e in generator["elements"] if fuses.get(e["stack"])]
    if generator["elements"]:
        objects.append(appset)
    return objects


if __name__ == "__main__":
    sys.stdout.write(yaml.safe_dump_all(render(sys.argv[1:]), sort_keys=False))
