"""A user's install has no repository around it: the wheel must carry every data file."""

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_carries_templates_filters_sdk_and_schemas(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
    names = set(zipfile.ZipFile(next(tmp_path.glob("envoyext-*.whl"))).namelist())
    for required in ("envoyext/templates/blank/c/filter.c.j2", "envoyext/templates/blank/lua/filter.lua.j2",
                     "envoyext/filters/README.md", "envoyext/sdk/proxy_wasm.h", "envoyext/sdk/proxy_wasm.c",
                     "envoyext/schemas/scenario.yaml", "envoyext/schemas/filter.yaml",
                     "envoyext/schemas/istio/crd-all.gen.yaml", "envoyext/publish/schemas/envoyextensionpolicy.json"):
        assert required in names, required
    assert not any("/build/" in n and n.endswith(".wasm") for n in names)
