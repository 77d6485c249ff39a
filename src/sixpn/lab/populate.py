"""A topology made real through the control plane's API: its orgs, networks, apps and
machines, in the file's order, each step said as it is done."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from sixpn.client.wire import error_from_answer, translating
from sixpn.lab.topology import MachineSpec, Progress, Topology
from sixpn.model.errors import SixpnError


def populate(
    topology: Topology, api: httpx.Client, progress: Progress | None = None
) -> list[dict[str, Any]]:
    """Create the topology's orgs, networks, apps and machines; return the machine records.

    ``api`` is a client authenticated as admin with its base URL set; the hosts must have
    joined already (their agents do that). Peers are not created here: a peer needs a key pair
    and a "laptop" namespace, which is the lab's work. A refusal raises the error the API
    names, its message saying which object was being created.
    """
    say = progress or (lambda _message: None)
    machines: list[dict[str, Any]] = []
    for org in topology.orgs:
        _post(api, "/v1/orgs", {"name": org.name}, f"organization '{org.name}'")
        say(f"org {org.name}")
        base = f"/v1/orgs/{quote(org.name, safe='')}"
        for net in org.networks:
            _post(api, f"{base}/networks", {"name": net}, f"network '{org.name}/{net}'")
            say(f"network {org.name}/{net}")
        for app in org.apps:
            body = {"name": app.name, "network": app.network}
            _post(api, f"{base}/apps", body, f"app '{org.name}/{app.name}'")
            say(f"app {org.name}/{app.name} (network {app.network})")
        for spec in org.machines:
            where = f"on host '{spec.host}'" if spec.host else f"in region '{spec.region}'"
            what = f"a machine of app '{org.name}/{spec.app}' {where}"
            for _ in range(spec.count):
                machine = _post(api, f"{base}/machines", _machine_body(spec), what)
                machines.append(machine)
                say(_machine_line(machine))
    return machines


def _machine_body(spec: MachineSpec) -> dict[str, Any]:
    body: dict[str, Any] = {"app": spec.app, "state": spec.state.value}
    body.update({"host": spec.host} if spec.host else {"region": spec.region})
    if spec.process_group is not None:
        body["process_group"] = spec.process_group
    if spec.metadata:
        body["metadata"] = dict(spec.metadata)
    return body


def _machine_line(m: Mapping[str, Any]) -> str:
    return (
        f"machine {m.get('id')} {m.get('org')}/{m.get('app')} on {m.get('host')} "
        f"({m.get('region')}) {m.get('address')} {m.get('state')}"
    )


def _post(api: httpx.Client, path: str, body: dict[str, Any], what: str) -> dict[str, Any]:
    """POST ``body``; the created object, or the API's error naming ``what`` was created."""
    url = str(api.base_url)
    with translating(url):
        answer = api.post(path, json=body)
    if not answer.is_success:
        error = error_from_answer(url, answer.status_code, answer.content)
        raise type(error)(
            f"lab: creating {what}: the control plane answered {answer.status_code}: "
            f"{error.message}",
            field=error.field,
        )
    try:
        created = answer.json()
    except ValueError:
        created = None
    if not isinstance(created, dict):
        raise SixpnError(f"lab: creating {what}: unexpected answer {answer.text[:200]!r}")
    return created
