"""Which models an endpoint of a namespace already serves, read from etcd: what explains a
worker that exits during start-up without a word (Dynamo refuses a second model on one
endpoint, and its mocker swallows that error and exits 0)."""

from __future__ import annotations

from launcher.registrations import layouts
from launcher.registrations.etcd import Etcd
from launcher.registrations.layouts import check_namespace


def served_on(etcd_url: str, namespace: str, component: str, layout: str) -> set[str]:
    """The model names registered on dyn://NAMESPACE.COMPONENT.generate: 1.x cards under
    v1/mdc/NS/COMPONENT/generate/, 0.5 models/ entries naming that endpoint."""
    check_namespace(namespace)
    with Etcd(etcd_url) as etcd:
        if layout == "v1":
            found = etcd.get_prefix(f"v1/mdc/{namespace}/{component}/generate/")
            return {n for kv in found if (n := _card_name(layouts.load(kv.value)))}
        entries = etcd.get_prefix("models/")
    names = set()
    for kv in entries:
        value = layouts.load(kv.value)
        endpoint = value.get("endpoint") if isinstance(value, dict) else None
        where = (endpoint or {}) if isinstance(endpoint, dict) else {}
        if (where.get("namespace"), where.get("component")) == (namespace, component):
            name = value.get("name")
            names |= {name} if isinstance(name, str) else set()
    return names


def _card_name(value: object) -> str | None:
    card = value.get("card_json") if isinstance(value, dict) else None
    name = card.get("display_name") if isinstance(card, dict) else None
    return name if isinstance(name, str) and name else None
