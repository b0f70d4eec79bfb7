# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The libvirt back-end of the host seam (service/backend.py): a service's hosts are VMs on one or more
hypervisors (fleet.py), made from a verified disk (disk.py).

Every host is a domain labelled with its service and engine (a hypervisor reached under two names
lists each host once); calls go to the hypervisor its host runs on, listings to all at once. The
balancer and the health check reach a host at the address its network reserved for it. A stop
presses the VM's ACPI power button; a guest that ignores it is destroyed once stop_timeout passes
(by a watch that outlives the controller when the stop is left to finish in the background).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import (
    EngineUnreachable,
    InfraError,
    answers_within,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import LABEL_ENGINE, LABEL_SERVICE, HostLabels
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import cores_of
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.placement import place_new_hosts
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors import vm
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.disk import (
    DiskArtifact,
    manifest_verdict_labels,
    newest_verdict,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.domain import LABEL_ADDRESS, status_of
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.drift import (
    config_drift,
    parse_probe,
    probe_finished,
    probe_script,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.fleet import VmFleet, controller_store
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.site import Site
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.ssh import run_over_ssh
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.stop_watch import start_watch
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.store import LibvirtStore
from ansible_collections.immutable.infra.plugins.plugin_utils.service import plan as rp
from ansible_collections.immutable.infra.plugins.plugin_utils.service.backend import FoundHost, HostRecord, Placed
from ansible_collections.immutable.infra.plugins.plugin_utils.service.health import run_for_each
from ansible_collections.immutable.infra.plugins.plugin_utils.service.spec import HostSpec
from ansible_collections.immutable.infra.plugins.plugin_utils.service.store import ServiceStore


class VmHosts:
    def __init__(self, fleet: VmFleet, service: str, artifact: DiskArtifact | None = None,
                 progress: Callable[[str], None] | None = None) -> None:
        """artifact: the disk this run rolls out, when it has one (a rollback or heal may not)."""
        self.fleet = fleet
        self.service = service
        self.artifact = artifact
        self.progress = progress or (lambda message: None)
        self.down: dict[str, str] = dict(fleet.down)
        self.shipped: dict[str, Any] | None = None
        self._labels: dict[str, dict[str, str]] = {}  # domain UUID -> its labels (they never change)

    # the hypervisors ----------------------------------------------------------------------------
    @property
    def engine_names(self) -> list[str]:
        return [engine.name for engine in self.fleet.engines]

    @property
    def several(self) -> bool:
        return len(self.fleet.engines) > 1

    def machine_of(self, engine: str) -> str:
        return cores_of(self.fleet.engines, engine)

    def site(self, engine: str) -> Site:
        return self.fleet.site(engine)

    def store(self) -> LibvirtStore:
        return self.site(self.fleet.coordinator_name).store

    def stores(self) -> dict[str, LibvirtStore]:
        """The store of every hypervisor that answers, by name."""
        return {name: site.store for name, site in self.fleet.sites.items()}

    def record_stores(self) -> list[ServiceStore]:
        local = controller_store()
        return [*(site.store for site in self.fleet.sites.values()), *([local] if local else [])]

    def describe(self) -> dict[str, Any]:
        return {"engines": self.fleet.describe(), "addressing": "network"}

    def _engine_of(self, error: EngineUnreachable) -> str | None:
        """The hypervisor the error came from, by name."""
        return next((name for name, site in self.fleet.sites.items()
                     if site.hypervisor.uri == error.details.get("engine")), None)

    def mark_unreachable(self, error: EngineUnreachable) -> str | None:
        name = self._engine_of(error)
        if name is not None:
            self.down[name] = error.message
        return name

    def answers_again(self, error: EngineUnreachable) -> bool:
        name = self._engine_of(error)
        if name is None:
            return False
        hypervisor = self.fleet.sites[name].hypervisor
        return answers_within(lambda: hypervisor.call("reach it", hypervisor.conn.getLibVersion))  # conn: a new one when lost

    def close(self) -> None:
        return None

    # observe ------------------------------------------------------------------------------------
    def hosts(self, include_stopped: bool = True) -> list[FoundHost]:
        engines = [name for name in self.fleet.sites if name not in self.down]
        if len(engines) == 1:
            return self._listing(engines[0], include_stopped)
        with ThreadPoolExecutor(max_workers=max(1, len(engines))) as pool:
            listed = list(pool.map(lambda engine: self._listing(engine, include_stopped), engines))
        return [host for hosts in listed for host in hosts]

    def _listing(self, engine: str, include_stopped: bool) -> list[FoundHost]:
        site = self.site(engine)
        found = []
        for domain in site.hypervisor.call("list the domains", site.hypervisor.conn.listAllDomains, 0):
            labels = self._labels_of(site, domain)
            if labels.get(LABEL_SERVICE) != self.service or labels.get(LABEL_ENGINE) != engine:
                continue
            state = site.hypervisor.find("read a domain's state", domain.state)
            if state is None:
                continue  # removed meanwhile
            running, status = status_of(*state[:2])
            if running or include_stopped:
                address, port = labels.get(LABEL_ADDRESS), HostLabels.from_labels(labels).port or 0
                found.append(FoundHost(domain.name(), engine, domain.UUIDString(), labels, running, status,
                                       (address, port) if address and running else None))
        return found

    def _labels_of(self, site: Site, domain: Any) -> dict[str, str]:
        key = domain.UUIDString()
        if key not in self._labels:
            self._labels[key] = vm.labels_of(site, domain)
        return self._labels[key]

    def endpoint(self, host: HostRecord) -> tuple[str | None, int]:
        site = self.site(host.engine)
        domain = vm.domain_of(site, host.host_id)
        labels = self._labels_of(site, domain) if domain is not None else {}
        return labels.get(LABEL_ADDRESS), HostLabels.from_labels(labels).port or 0

    # the artifact -------------------------------------------------------------------------------
    def place(self, plan: rp.Plan, observed: list[rp.Host]) -> Placed:
        placed, placement = place_new_hosts(self.fleet.engines, self.down, self.fleet.place_down_share, plan, observed)
        return Placed(placed, placement.as_dict() if placement else None)

    def plan_prepare(self, artifact: str, engines: list[str]) -> dict[str, Any] | None:
        """Where prepare would copy the disk (None when it is everywhere it is needed)."""
        needed = [name for name in dict.fromkeys(engines) if name in self.fleet.sites
                  and self.site(name).disk_volume(artifact) is None]
        return {"method": "upload", "targets": needed} if needed else None

    def prepare(self, artifact: str, engines: list[str]) -> dict[str, Any] | None:
        """Copies the disk to every hypervisor that needs it, with its newest verdict, before any host starts."""
        planned = self.plan_prepare(artifact, engines)
        if planned is None:
            return None
        if self.artifact is None or self.artifact.digest != artifact:
            raise InfraError(f"The disk {artifact[:19]} is not on hypervisor(s) {', '.join(planned['targets'])}; give "
                             "disk: as the path of its file so that it can be copied there.")
        started = time.monotonic()
        disk = self.artifact
        # The newest verdict goes with the disk, the manifest's too: a later run that names the disk by its digest
        # alone (a rollback whose file is gone) is gated on what the hypervisor holds.
        verdict = newest_verdict({"the manifest": manifest_verdict_labels(disk),
                                  **{name: site.verdict(artifact) for name, site in self.fleet.sites.items()}})

        def copy(name: str) -> None:
            seconds = self.site(name).copy_disk(disk, verdict[1] if verdict else None, self.progress)
            self.progress(f"disk {disk.describe()} is on hypervisor {name} now ({seconds:.1f} s)")
        run_for_each(planned["targets"], copy)  # each hypervisor's copy at once
        self.shipped = dict(planned, seconds=round(time.monotonic() - started, 3))
        return self.shipped

    # hosts --------------------------------------------------------------------------------------
    def create(self, name: str, engine: str, spec: HostSpec, rollout_id: str, balancer: str | None = None) -> str:
        site = self.site(engine)
        _service, generation, index = rp.parse_host_name(name)
        local_disk = self.artifact.path if self.artifact and self.artifact.digest == spec.image_id else None
        accel, _why = site.accel(local_disk, self.artifact.disk_format if self.artifact else "qcow2")
        return vm.make(site, name, spec, spec.labels(generation, index, rollout_id, engine, balancer), accel)

    def _domain(self, host: HostRecord) -> Any:
        domain = vm.domain_of(self.site(host.engine), host.host_id)
        if domain is None:
            raise InfraError(f"host {host.name} no longer exists on hypervisor {host.engine}.", host=host.name)
        return domain

    def start(self, host: HostRecord) -> None:
        vm.start(self.site(host.engine), self._domain(host), host.name)

    def request_stop(self, host: HostRecord, timeout: int, answer_wait: float) -> bool:
        site, domain = self.site(host.engine), self._domain(host)
        run = site.hypervisor.call(f"read the ID of {host.name}", domain.ID)
        vm.shut_down(site, domain, host.name)
        if vm.wait_shut_off(site, domain, host.name, min(answer_wait, timeout)):
            return True
        if timeout <= answer_wait:
            vm.destroy(site, domain, host.name)
            return True
        start_watch(site.hypervisor.uri, host.host_id, run, time.time() + timeout - answer_wait)
        return False

    def stop(self, host: HostRecord, timeout: int) -> None:
        site, domain = self.site(host.engine), self._domain(host)
        vm.shut_down(site, domain, host.name)
        if not vm.wait_shut_off(site, domain, host.name, timeout):
            vm.destroy(site, domain, host.name)

    def kill(self, host: HostRecord) -> None:
        vm.destroy(self.site(host.engine), self._domain(host), host.name)

    def wait_exited(self, host: HostRecord, timeout: float) -> bool:
        site = self.site(host.engine)
        domain = vm.domain_of(site, host.host_id)
        return domain is None or vm.wait_shut_off(site, domain, host.name, timeout)

    def remove(self, host: HostRecord) -> None:
        site = self.site(host.engine)
        vm.remove(site, vm.domain_of(site, host.host_id), host.name)
        self._labels.pop(host.host_id, None)

    def run_command(self, host: HostRecord, command: list[str]) -> tuple[int, str]:
        site = self.site(host.engine)
        domain = vm.domain_of(site, host.host_id)
        labels = self._labels_of(site, domain) if domain is not None else {}
        spec = HostSpec.from_labels(labels)
        settings = spec.container if spec else {}
        if not labels.get(LABEL_ADDRESS):
            return 255, f"host {host.name} has no address"
        return run_over_ssh(str(settings.get("user") or "root"), labels[LABEL_ADDRESS], settings.get("ssh_key"), command)

    def problem(self, host: HostRecord) -> str | None:
        site = self.site(host.engine)
        domain = vm.domain_of(site, host.host_id)
        if domain is None:
            return "its VM was removed"
        state = site.hypervisor.find(f"read the state of {host.name}", domain.state)
        if state is None:
            return "its VM was removed"
        running, status = status_of(*state[:2])
        return None if running else f"its VM is {'shut off' if status == 'exited' else status}"

    def drifted(self, writable_paths: list[str], recorded: dict[str, list[str]] | None) -> list[dict[str, Any]]:
        """The running hosts that differ from the disk they were made from (drift.py), probed in parallel over
        SSH: host, engine, reasons, and whether a rollout recorded its spec. By engine, then name."""
        running = self.hosts(include_stopped=False)
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(running)))) as pool:
            reasons = list(pool.map(lambda host: self._drift_of(host, writable_paths, recorded), running))
        order = self.engine_names
        drifted = [{"host": host.name, "engine": host.engine, "reasons": found,
                    "recorded": HostSpec.from_labels(host.labels) is not None}
                   for host, found in zip(running, reasons, strict=True) if found]
        return sorted(drifted, key=lambda entry: (order.index(entry["engine"]), entry["host"]))

    def _drift_of(self, host: FoundHost, writable_paths: list[str], recorded: dict[str, list[str]] | None) -> list[str]:
        labels = HostLabels.from_labels(host.labels)
        spec = HostSpec.from_labels(host.labels)
        if spec is None or labels.generation is None:
            return ["carries the service's label but was not made by a rollout (no generation or spec labels)"]
        reasons = []
        if recorded is not None and host.name not in recorded.get(labels.rollout or "", []):
            reasons.append(f"not started by any recorded rollout (rollout {labels.rollout or 'none'})")
        site = self.site(host.engine)
        domain = vm.domain_of(site, host.host_id)
        if domain is not None:
            reasons += config_drift(site.hypervisor.call(f"read {host.name}", domain.info), spec.container)
        if not spec.container.get("ssh_key"):
            return reasons  # no key to look inside with: the rollout gave no vm.ssh_key
        code, output = self.run_command(HostRecord(host.name, host.host_id, engine=host.engine),
                                        ["sh", "-c", probe_script()])
        if code != 0 or not probe_finished(output):
            return [*reasons, f"could not be inspected over SSH (exit code {code}: {output.strip()[-200:]})"]
        return reasons + parse_probe(output, writable_paths)

    def check_settings(self, spec: HostSpec) -> None:
        """Refuses, before anything changes, a network named in engines[].network that a hypervisor lacks."""
        for site in self.fleet.sites.values():
            site.check_network()
