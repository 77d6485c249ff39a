"""Machines of an organization: create, list, show, start, stop, destroy."""

from __future__ import annotations

from fastapi import APIRouter

from sixpn.control.api.auth import OrgMember, Svc
from sixpn.control.api.schemas import MachineCreate
from sixpn.model.entities import Machine, MachineState

router = APIRouter(prefix="/v1/orgs/{org}/machines", tags=["machines"])


@router.get("")
async def list_machines(
    org: str, svc: Svc, _: OrgMember, app: str | None = None, all: bool = False
) -> list[Machine]:
    return await svc.machines.list(org, app=app, include_destroyed=all)


@router.post("", status_code=201)
async def create_machine(org: str, body: MachineCreate, svc: Svc, _: OrgMember) -> Machine:
    return await svc.machines.create(
        org,
        body.app,
        host=body.host,
        region=body.region,
        state=body.state,
        process_group=body.process_group,
        metadata=body.metadata,
    )


@router.get("/{machine_id}")
async def get_machine(org: str, machine_id: str, svc: Svc, _: OrgMember) -> Machine:
    return await svc.machines.get(org, machine_id)


@router.post("/{machine_id}/start")
async def start_machine(org: str, machine_id: str, svc: Svc, _: OrgMember) -> Machine:
    return await svc.machines.set_state(org, machine_id, MachineState.STARTED)


@router.post("/{machine_id}/stop")
async def stop_machine(org: str, machine_id: str, svc: Svc, _: OrgMember) -> Machine:
    return await svc.machines.set_state(org, machine_id, MachineState.STOPPED)


@router.delete("/{machine_id}")
async def destroy_machine(org: str, machine_id: str, svc: Svc, _: OrgMember) -> Machine:
    """Destroy: the machine leaves the network; its record stays, in state ``destroyed``."""
    return await svc.machines.set_state(org, machine_id, MachineState.DESTROYED)
