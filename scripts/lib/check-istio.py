"""Checks Istio WasmPlugin manifests against Istio's own WasmPlugin schema.

The models come from the PyPI package cloudcoil-models-istio (generated from Istio's CRDs): enum
values, types and required fields are checked by them; fields the CRD does not know (a typo such
as `failstrategy`) are reported here too, except inside the free-form `pluginConfig`, which
`kavach validate` checks against the filter's own rules.
Usage: check-istio.py MANIFEST.yaml...
"""

import sys

import yaml
from cloudcoil.models.istio.extensions.v1alpha1 import WasmPlugin
from pydantic import BaseModel


def unknown_fields(model, data, path):
    """Keys of `data` that no field of `model` (by alias or name) accepts, recursively."""
    found = []
    if not isinstance(data, dict):
        return found
    fields = type(model).model_fields
    by_key = {}
    for name, info in fields.items():
        by_key[name] = name
        if info.alias:
            by_key[info.alias] = name
    for key, value in data.items():
        name = by_key.get(key)
        if name is None:
            found.append(f"{path}.{key}".lstrip("."))
            continue
        if name == "plugin_config":
            continue  # free-form; kavach validate checks it
        sub = getattr(model, name, None)
        if isinstance(sub, BaseModel):
            found += unknown_fields(sub, value, f"{path}.{key}")
        elif isinstance(sub, list) and isinstance(value, list):
            for i, (m, v) in enumerate(zip(sub, value)):
                if isinstance(m, BaseModel):
                    found += unknown_fields(m, v, f"{path}.{key}[{i}]")
    return found


def main(paths):
    bad = 0
    for path in paths:
        with open(path) as fh:
            for doc in yaml.safe_load_all(fh):
                if not doc or doc.get("kind") != "WasmPlugin":
                    continue
                name = doc.get("metadata", {}).get("name", "?")
                try:
                    plugin = WasmPlugin.model_validate(doc)
                except Exception as e:  # pydantic.ValidationError
                    print(f"INVALID  {path}: WasmPlugin {name}: {e}")
                    bad += 1
                    continue
                extra = unknown_fields(plugin, doc, "")
                if extra:
                    print(f"INVALID  {path}: WasmPlugin {name}: unknown fields {', '.join(extra)}")
                    bad += 1
                else:
                    print(f"ok       {path}: WasmPlugin {name} (Istio schema)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
