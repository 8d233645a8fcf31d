#!/usr/bin/env bash
# Here, before a lent GPU's first call: what benchmarks/gpu_session.sh needs carried there (the device machine has
# no network), both git-ignored: .whl/ (the pure-Python wheels LightningCLI needs beyond the device image, at the
# versions this checkout's environment runs) and .gpu_data/MNIST/raw/ (MNIST's raw files, gzipped: 12 MiB).
#   bash benchmarks/gpu_prepare.sh   # then: run(command="bash benchmarks/gpu_session.sh 540 kmeans dcfae",
#                                    #          carry=[".whl", ".gpu_data"])
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DCL_DATA:-../shared/data}
pins=$(python3 - <<'PY'
import importlib.metadata as md
for name in ("jsonargparse", "docstring_parser", "typeshed_client", "importlib_resources"):
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:  # not needed by this Python; the device's may need it
        print(name)
PY
)
rm -rf .whl && mkdir -p .whl .gpu_data/MNIST/raw
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps --only-binary :all: -d .whl $pins
for f in "$DATA"/MNIST/raw/*-ubyte; do gzip -c "$f" > ".gpu_data/MNIST/raw/$(basename "$f").gz"; done
ls .whl; du -sh .whl .gpu_data
