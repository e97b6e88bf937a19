"""A DynamoGraphDeployment against the operator's own CRD, as the API server checks a create:
the `openAPIV3Schema` as JSON Schema (unknown fields refused wherever the CRD lists `properties`
and does not preserve unknown fields; int-or-string; nullable; list-map keys unique), then every
`x-kubernetes-validations` CEL rule at each node the manifest has (cel-python evaluates them, with
the Kubernetes CEL library functions the rules use: lowerAscii, split, quantity).

The CRDs are in tests/k8s/crds exactly as the operator's repository ships them (xz; copies of
shared/reference/k8s-crds). Which CRD checks which operator row: `CRDS_FOR_ROW`.
"""

from __future__ import annotations

import functools
import lzma
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

CRDS = Path(__file__).resolve().parent / "crds"
V05, V13, V14, MAIN = (
    "dgd-v0.5.0.yaml.xz",  # v0.4.1's is byte-identical
    "dgd-1.3.0-5b4bc1dd.yaml.xz",
    "dgd-1.4.0cut-e147ceea.yaml.xz",
    "dgd-main-2a6da14c.yaml.xz",
)
# Operator row (launcher.k8s.releases) -> the CRDs a manifest for it must pass. 0.4.0's CRD is
# v0.5.0's without spec.backendFramework (modelled: NO_BACKEND_FRAMEWORK). No 1.0-1.2 CRD is at
# hand: such a manifest must pass both neighbours' v1alpha1 (0.5.0's and 1.3.0's).
CRDS_FOR_ROW = {
    "0.4.0": (V05,),
    "0.4.1": (V05,),
    "0.5.x": (V05,),
    "1.0-1.2": (V05, V13),
    "1.3": (V13,),
    ">=1.4": (V14, MAIN),
}
NO_BACKEND_FRAMEWORK = {"0.4.0"}


@functools.cache
def crd_schemas(name: str) -> dict[str, dict[str, Any]]:
    """API version -> its openAPIV3Schema, of the CRD file ``name``."""
    with lzma.open(CRDS / name, "rt", encoding="utf-8") as f:
        (crd,) = [doc for doc in yaml.load_all(f, Loader=yaml.CSafeLoader) if doc]
    assert crd["spec"]["names"]["kind"] == "DynamoGraphDeployment"
    return {
        v["name"]: v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["served"]
    }


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """A CRD's OpenAPI v3 schema as JSON Schema, as the API server applies it to a create."""
    out = {k: v for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if schema.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if "properties" in out:
        out["properties"] = {k: structural(v) for k, v in out["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = structural(out["additionalProperties"])
    if isinstance(out.get("items"), dict):
        out["items"] = structural(out["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in out:
            out[key] = [structural(s) for s in out[key]]
    return out


def _without_backend_framework(schema: dict[str, Any]) -> dict[str, Any]:
    spec = dict(schema["properties"]["spec"])
    spec["properties"] = {k: v for k, v in spec["properties"].items() if k != "backendFramework"}
    return schema | {"properties": schema["properties"] | {"spec": spec}}


# -- list-map keys -------------------------------------------------------------------------------


def _list_map_errors(schema: dict[str, Any], value: Any, where: str) -> Iterator[str]:
    if isinstance(value, list) and schema.get("x-kubernetes-list-type") == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen = [tuple(item.get(k) for k in keys) for item in value if isinstance(item, dict)]
        if len(seen) != len(set(seen)):
            yield f"{where}: duplicate entries for list-map keys {keys}"
    yield from _children(schema, value, where, _list_map_errors)


# -- CEL -----------------------------------------------------------------------------------------

_QUANTITY_RE = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?\d+|Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?$")
_SUFFIX: dict[str, Decimal | int] = {
    "": 1, "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": 10**3,
    "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18, "Ki": 2**10,
    "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip


def _quantity(text: celtypes.StringType) -> celtypes.DoubleType:
    match = _QUANTITY_RE.fullmatch(str(text))
    if match is None:
        raise ValueError(f"not a quantity: {text}")
    number, suffix = Decimal(match[1]), match[2] or ""
    scale = Decimal(10) ** int(suffix[1:]) if suffix[:1] in ("e", "E") else _SUFFIX[suffix]
    return celtypes.DoubleType(float(number * Decimal(scale)))


# Kubernetes CEL library functions the DGD rules use (receiver first).
CEL_FUNCTIONS: dict[str, Any] = {
    "lowerAscii": lambda s: celtypes.StringType(str(s).lower()),
    "split": lambda s, sep: celtypes.ListType([celtypes.StringType(p) for p in str(s).split(sep)]),
    "quantity": _quantity,
    "isGreaterThan": lambda a, b: celtypes.BoolType(a > b),
    "isLessThan": lambda a, b: celtypes.BoolType(a < b),
}


@functools.cache
def _program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule), functions=CEL_FUNCTIONS)


def create_rule(rule: dict[str, Any]) -> str | None:
    """The rule as a create evaluates it: transition rules (oldSelf) do not run on a create,
    except with optionalOldSelf, where oldSelf has no value."""
    text = str(rule["rule"])
    if "oldSelf" not in text:
        return text
    if not rule.get("optionalOldSelf"):
        return None
    text = text.replace("oldSelf.hasValue()", "false")
    return None if "oldSelf" in text else text


def _cel_errors(schema: dict[str, Any], value: Any, where: str) -> Iterator[str]:
    for rule in schema.get("x-kubernetes-validations", []):
        text = create_rule(rule)
        if text is None:
            continue
        try:
            result = _program(text).evaluate({"self": json_to_cel(value)})
        except CELEvalError as err:
            yield f"{where}: CEL rule {text!r} failed to evaluate: {str(err)[:200]}"
            continue
        if isinstance(result, CELEvalError) or not bool(result):
            yield f"{where}: {rule.get('message') or text} (CEL: {text})"
    yield from _children(schema, value, where, _cel_errors)


def _children(schema: dict[str, Any], value: Any, where: str, check: Any) -> Iterator[str]:
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key) if key in props else (extra if isinstance(extra, dict) else None)
            if sub is not None:
                yield from check(sub, item, f"{where}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            yield from check(schema["items"], item, f"{where}[{i}]")


# -- the whole check -----------------------------------------------------------------------------


def errors_against(dgd: dict[str, Any], crd: str, *, backend_framework: bool = True) -> list[str]:
    """Where ``dgd`` breaks CRD file ``crd`` (its API version's schema); empty if it passes."""
    api = dgd["apiVersion"].split("/")[1]
    schemas = crd_schemas(crd)
    if api not in schemas:
        return [f"{crd}: {api} is not served"]
    schema = schemas[api]
    if not backend_framework:
        schema = _without_backend_framework(schema)
    validator = jsonschema.Draft7Validator(structural(schema))
    found = [
        f"{crd} {api} {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(dgd)
    ]
    found += [f"{crd} {api} {e}" for e in _list_map_errors(schema, dgd, "")]
    found += [f"{crd} {api} {e}" for e in _cel_errors(schema, dgd, "")]
    return found


def crd_errors(dgd: dict[str, Any], row: str) -> list[str]:
    """Where ``dgd`` breaks any CRD of operator row ``row``; empty if it passes them all."""
    found: list[str] = []
    for crd in CRDS_FOR_ROW[row]:
        found += errors_against(dgd, crd, backend_framework=row not in NO_BACKEND_FRAMEWORK)
    return found
