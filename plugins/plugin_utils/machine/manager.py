# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The disk build: a bootable VM disk from a baked image, reused when its inputs did not change.

A build container started from the exact image ID gets a kernel, an initramfs, systemd and SSH
from the image's own Debian sources; its filesystem is exported, made bootable (tree.py) and packed
into a partitioned disk (assemble.py). A manifest beside the disk records what went in; the ledger
records every build.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import replace
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.attest import sbom as sboms
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.keys import short_key_id
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.signing import (
    SIGNING_OPTIONS,
    DiskFacts,
    attest_disk,
    signing_key_from,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.store import record_summary, write_sidecars
from ansible_collections.immutable.infra.plugins.plugin_utils.bake import builder
from ansible_collections.immutable.infra.plugins.plugin_utils.bake.roles import CollectionIndex
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import (
    InfraError,
    short_id,
    utc_timestamp,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.core.interrupts import Guard, interruptible
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import DISK_BUILDER_PREFIX, LABEL_INPUTS_HASH
from ansible_collections.immutable.infra.plugins.plugin_utils.core.provenance import controller_identity
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient, Endpoint
from ansible_collections.immutable.infra.plugins.plugin_utils.machine import assemble, guest
from ansible_collections.immutable.infra.plugins.plugin_utils.machine import container as build_container
from ansible_collections.immutable.infra.plugins.plugin_utils.machine import plan as disk_plan
from ansible_collections.immutable.infra.plugins.plugin_utils.machine import tree as disk_tree
from ansible_collections.immutable.infra.plugins.plugin_utils.task.contract import Manager, TaskContext

DEFAULT_DEST = "~/.local/share/immutable-infra/disks"

DISK_ARGUMENT_SPEC: dict[str, Any] = {
    "name": {"type": "str", "required": True},
    "image": {"type": "str", "required": True},
    "dest": {"type": "path"},
    "format": {"type": "str", "default": "qcow2", "choices": list(disk_plan.FORMATS)},
    "size": {"type": "str", "default": "2G"},
    "kernel_package": {"type": "str", "default": "linux-image-cloud-amd64"},
    "packages": {"type": "list", "elements": "str", "default": []},
    "kernel_args": {"type": "list", "elements": "str", "default": []},
    "hostname": {"type": "str"},
    "ssh_authorized_keys": {"type": "list", "elements": "str", "default": [], "no_log": False},
    "command_unit": {"type": "str", "default": "auto", "choices": ["auto", "always", "never"]},
    "ssh_host_key_types": {"type": "list", "elements": "str", "default": list(guest.DEFAULT_HOST_KEY_TYPES)},
    "sshd_pam": {"type": "str", "default": "auto", "choices": ["auto", "always", "never"]},
    "masked_units": {"type": "list", "elements": "str", "default": list(guest.MASKED_UNITS)},
    "force": {"type": "bool", "default": False},
    "network": {"type": "str"},
    "build_timeout": {"type": "int", "default": 1800},
    **SIGNING_OPTIONS,
}


def locate(given: str, basedir: str) -> tuple[str, str]:
    """(disk, manifest) from the path of either, relative to basedir; both must exist."""
    path = os.path.normpath(os.path.join(basedir, os.path.expanduser(given)))
    if path.endswith(".json"):
        manifest_path = path
        found = read_manifest(path) or {}
        disk = os.path.join(os.path.dirname(path), str(found.get("disk") or ""))
    else:
        disk, manifest_path = path, disk_plan.manifest_file_name(path)
    if not os.path.isfile(disk):
        raise InfraError(f"Disk '{given}' does not exist (looked for {disk}); build it with immutable.infra.disk.")
    if not os.path.isfile(manifest_path):
        raise InfraError(f"Disk '{given}' has no manifest beside it ({manifest_path}); use disks built by "
                         "immutable.infra.disk, which records what went into them.")
    return disk, manifest_path


def read_manifest(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as handle:
            found = json.load(handle)
        return found if isinstance(found, dict) else None
    except (OSError, ValueError):
        return None


def write_manifest(path: str, manifest: dict[str, Any]) -> None:
    """Replaces the manifest in one rename, so a reader never sees half of it."""
    temporary = f"{path}.{uuid.uuid4().hex[:6]}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(temporary, path)


def signed_fields(built: dict[str, Any]) -> dict[str, Any]:
    """What a signed build adds to its ledger record and result (nothing without signing_key)."""
    return {key: built[key] for key in ("attestations", "signed_by") if key in built}


class DiskBuilder(Manager):
    def __init__(self, params: dict[str, Any], context: TaskContext) -> None:
        super().__init__(params, context)
        self.basedir = context.basedir
        self.check_mode = context.check_mode
        self.name = disk_plan.validate_name(params["name"])
        self.size = disk_plan.parse_size(params["size"])
        self.hostname = disk_plan.validate_hostname(params["hostname"] or self.name.replace(".", "-").replace("_", "-"))
        self.keys = disk_plan.validate_keys(params["ssh_authorized_keys"])
        self.packages = disk_plan.validate_packages(params["packages"])
        self.key_types = guest.validate_key_types(params["ssh_host_key_types"])
        self.masked = guest.validate_masked(params["masked_units"])
        disk_plan.validate_packages([params["kernel_package"]], "kernel_package")
        if params["build_timeout"] <= 0:
            raise InfraError("build_timeout must be a positive number of seconds.")
        self.dest = os.path.normpath(os.path.join(self.basedir, os.path.expanduser(params["dest"] or DEFAULT_DEST)))
        self.signer = signing_key_from(params, self.basedir)
        self.record: dict[str, Any] = {}

    def endpoint(self) -> Endpoint:
        """The task's engine, waited on for as long as the build may take: the package installation is one call."""
        endpoint = super().endpoint()
        return replace(endpoint, timeout=max(endpoint.timeout, self.params["build_timeout"]))

    def _boot_settings(self) -> dict[str, Any]:
        return {"hostname": self.hostname, "ssh_authorized_keys": self.keys, "kernel_args": self.params["kernel_args"],
                "command_unit": self.params["command_unit"], "ssh_host_key_types": self.key_types,
                "sshd_pam": self.params["sshd_pam"], "masked_units": self.masked}

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        client = self.client()
        image = client.image(self.params["image"])
        if image is None:
            raise InfraError(f"Image '{self.params['image']}' is not in the Docker engine; bake it "
                             "(immutable.infra.bake) or give an image ID that exists.")
        labels = disk_tree.config_of(image).get("Labels") or {}
        disk_plan.check_size_early(self.size, int(image.get("Size") or 0))
        inputs = disk_plan.disk_inputs(
            image_id=image["Id"], image_inputs_hash=labels.get(LABEL_INPUTS_HASH),
            kernel_package=self.params["kernel_package"], packages=self.packages, boot=self._boot_settings(),
            size=self.size, disk_format=self.params["format"])
        digest = disk_plan.inputs_hash(inputs)
        disk = os.path.join(self.dest, disk_plan.disk_file_name(self.name, digest, self.params["format"]))
        manifest_path = disk_plan.manifest_file_name(disk)
        result: dict[str, Any] = {"name": self.name, "disk": disk, "manifest": manifest_path, "inputs_hash": digest,
                                  "image": self.params["image"], "image_id": image["Id"],
                                  "image_inputs_hash": inputs["image_inputs_hash"]}
        found = read_manifest(manifest_path)
        disk_bytes = _size(disk)
        reused = self._reused(found, digest, disk, disk_bytes)
        if reused is not None:
            return dict(result, **reused, duration=round(time.monotonic() - started, 3))
        reason = ("force: true" if disk_bytes is not None and self.params["force"] else
                  "the disk or its boot files beside the manifest are missing or were changed" if found
                  else "no disk has these inputs yet")
        if self.check_mode:
            return dict(result, changed=True, cache_hit=False, would_build=True, reason=reason,
                        duration=round(time.monotonic() - started, 3), msg=f"would build {os.path.basename(disk)}")

        assemble.require_tools()
        if os.geteuid() != 0:
            raise InfraError("Building a disk needs root on the controller (the image's files keep their owners "
                             "in the disk); run the play as root or with become on localhost.")
        try:
            os.makedirs(self.dest, exist_ok=True)
        except OSError as error:
            raise InfraError(f"Cannot create the disk directory {self.dest}: {error.strerror}; set dest.") from None
        self.progress(f"disk: building {os.path.basename(disk)} from {self._describe(image['Id'])}")
        ledger = self.ledger()
        record = self.record = ledger.new_record(
            "disk", self.basedir, name=self.name, image=self.params["image"], image_id=image["Id"], inputs_hash=digest,
            image_inputs_hash=inputs["image_inputs_hash"], disk=disk)
        try:
            built = self._build(client, image, digest, inputs, disk, manifest_path, started)
        except InfraError as error:
            ledger.append(dict(record, result="failed", error=error.message,
                               duration=round(time.monotonic() - started, 3)))
            raise
        ledger.append(dict(record, result="succeeded", disk_digest=built["disk_digest"],
                           kernel_release=built["kernel_release"], packages=built["packages"],
                           duration=built["build_seconds"], **signed_fields(built)))
        return dict(result, changed=True, cache_hit=False, reason=reason, disk_digest=built["disk_digest"],
                    kernel_release=built["kernel_release"], packages=built["packages"], verdict=None,
                    boot=self._boot_paths(built), command_unit=built["command_unit"],
                    duration=built["build_seconds"], ledger=ledger.path, **signed_fields(built),
                    msg=f"built {os.path.basename(disk)} ({built['disk_bytes'] / disk_plan.MiB:.0f} MiB, kernel "
                        f"{built['kernel_release']}) in {built['build_seconds']:.1f} s")

    def _reused(self, found: dict[str, Any] | None, digest: str, disk: str,
                disk_bytes: int | None) -> dict[str, Any] | None:
        """What the task returns when the disk with these inputs is there already, with its boot files."""
        boot_bytes = {name: _size(os.path.join(self.dest, file))
                      for name, file in disk_plan.boot_file_names(os.path.basename(disk)).items()}
        if found is None or self.params["force"] or not disk_plan.cache_matches(found, digest, disk_bytes, boot_bytes):
            return None
        self.progress(f"disk: {os.path.basename(disk)} has these inputs already (inputs hash {digest[:12]}), reused")
        unsigned = ([f"{os.path.basename(disk)} was reused from an earlier build that signing_key did not sign, so it "
                     "has no provenance or SBOM signed by that key; build it again with force: true to sign it."]
                    if self.signer is not None and found.get("signed_by") != self.signer.keyid else [])
        return {"changed": False, "cache_hit": True, "disk_digest": found["disk_digest"], "warnings": unsigned,
                "kernel_release": found.get("kernel_release"), "packages": found.get("packages") or {},
                "boot": self._boot_paths(found), "verdict": found.get("verdict"),
                "msg": f"{os.path.basename(disk)} is up to date (inputs hash {digest[:12]})"}

    def _boot_paths(self, manifest: dict[str, Any]) -> dict[str, Any]:
        section = manifest.get("boot") or {}
        return {"kernel": os.path.join(self.dest, section["kernel"]), "initrd": os.path.join(self.dest, section["initrd"]),
                "command_line": section["command_line"], "ready_mark": section["ready_mark"]}

    def _describe(self, image_id: str) -> str:
        given = self.params["image"]
        return short_id(image_id) if given == image_id else f"{given} ({short_id(image_id)})"

    def _build(self, client: DockerClient, image: dict[str, Any], digest: str, inputs: dict[str, Any], disk: str,
               manifest_path: str, started: float) -> dict[str, Any]:
        container_name = f"{DISK_BUILDER_PREFIX}{digest[:12]}-{uuid.uuid4().hex[:6]}"
        work = None
        with interruptible(f"disk build of {self.name}") as guard:
            container_id = None
            try:
                work = tempfile.mkdtemp(prefix=".build-", dir=self.dest)
                container_id = client.run_detached(
                    image["Id"], container_name, {}, entrypoint=builder.KEEP_ALIVE, command=[], user="root",
                    networks=[self.params["network"]] if self.params["network"] else None)
                versions, release = build_container.install(client, container_id, self.params["kernel_package"],
                                                            self.packages, self.progress)
                pam = build_container.settle_sshd(client, container_id, self.key_types, self.params["sshd_pam"])
                tree = os.path.join(work, "root")
                self.progress("disk: exporting the root filesystem")
                disk_tree.export_tree(client, container_id, tree)
                with guard.shield():
                    client.remove_container(container_id)
                container_id = None
                return self._pack(image, digest, inputs, tree, work, disk, manifest_path, versions, release, started,
                                  guard, pam)
            finally:
                with guard.shield():
                    if container_id:
                        client.remove_container(container_id)
                    else:
                        client.remove_container(container_name)  # a signal may come before the ID is known
                    if work:
                        shutil.rmtree(work, ignore_errors=True)

    def _pack(self, image: dict[str, Any], digest: str, inputs: dict[str, Any], tree: str, work: str, disk: str,
              manifest_path: str, versions: dict[str, str], release: str, started: float,
              guard: Guard, pam: bool) -> dict[str, Any]:
        kernel, initrd = assemble.boot_files(tree)
        staging = disk_tree.take_out(tree, disk_plan.INITRAMFS_STAGING)
        layout = disk_plan.plan_layout(self.size, os.path.getsize(kernel) + os.path.getsize(initrd),
                                       assemble.tree_bytes(tree))
        root = disk_plan.root_uuid(digest)
        config = disk_tree.config_of(image)
        enabled = disk_tree.enabled_units(tree)
        write_unit = disk_plan.needs_command_unit(self.params["command_unit"], config, enabled)
        disk_tree.make_bootable(tree, disk_tree.GuestSettings(
            root_uuid=root, hostname=self.hostname, keys=self.keys, key_types=self.key_types, masked=self.masked,
            command_unit=disk_plan.command_unit(config, self._describe(image["Id"])) if write_unit else None))
        direct = {"kernel": os.path.join(work, "vmlinuz"), "initrd": os.path.join(work, "initrd")}
        shutil.copyfile(kernel, direct["kernel"])
        assemble.write_initramfs(tree, release, os.path.join(staging, disk_plan.BUSYBOX_PATH), direct["initrd"])
        command_line = disk_plan.kernel_command_line(root, self.params["kernel_args"])
        self.progress(f"disk: making the filesystems ({disk_plan.human_size(layout.size)} disk)")
        boot, rootfs, raw = (os.path.join(work, name) for name in ("boot.img", "root.img", "disk.raw"))
        assemble.make_boot_partition(boot, layout.boot_size, layout.boot_start, kernel, initrd,
                                     disk_plan.syslinux_config("vmlinuz", "initrd.img", command_line))
        assemble.make_root_partition(rootfs, layout.root_size, tree, root)
        contents = sboms.parse_contents(sboms.contents_from_tree(tree)) if self.signer else None
        shutil.rmtree(tree)
        assemble.assemble(raw, layout, boot, rootfs)
        os.unlink(boot)
        os.unlink(rootfs)
        staged = os.path.join(work, "disk.out")
        assemble.convert(raw, staged, self.params["format"])
        units = {"enabled_units": sorted({*enabled, *([disk_plan.COMMAND_UNIT] if write_unit else [])}
                                         - set(self.masked)),
                 "masked_units": self.masked, "ssh_host_key_types": self.key_types, "sshd_pam": pam}
        manifest = disk_plan.manifest(
            name=self.name, digest=digest, inputs=inputs, disk_file=os.path.basename(disk),
            disk_digest=assemble.file_digest(staged), disk_bytes=os.path.getsize(staged), image=self.params["image"],
            kernel_release=release, versions=versions, command_line=command_line, command_unit_written=write_unit,
            created=utc_timestamp(), built_by=controller_identity(), duration=round(time.monotonic() - started, 3),
            exposed_ports=sorted((config.get("ExposedPorts") or {}).keys()),
            boot=self._boot_section(disk, direct, root), guest=units)
        sidecars = self._attest(manifest, image, contents) if contents is not None else None
        with guard.shield():
            # The old manifest goes first: a run that dies before the new one is written leaves no manifest, so the
            # next run builds again instead of taking the new files for the old manifest's disk.
            with contextlib.suppress(FileNotFoundError):
                os.remove(manifest_path)
            for name, path in disk_plan.boot_file_names(os.path.basename(disk)).items():
                os.replace(direct[name], os.path.join(self.dest, path))
            os.replace(staged, disk)
            write_manifest(manifest_path, manifest)
            if sidecars:
                write_sidecars(disk, *sidecars)
        return manifest

    def _versions(self) -> dict[str, str]:
        own = CollectionIndex(self.context.collections_path).version("immutable.infra")
        return {"immutable.infra": own or "unknown", "ansible-core": self.context.ansible_core_version}

    def _attest(self, manifest: dict[str, Any], image: dict[str, Any], contents: sboms.Contents):
        """With signing_key: the disk's signed provenance and SBOM (written beside it), summed up in its manifest."""
        if self.signer is None:
            return None
        facts = DiskFacts(name=self.name, disk_file=manifest["disk"], image=self.params["image"], image_id=image["Id"],
                          inputs=manifest["inputs"], inputs_hash=manifest["inputs_hash"], packages=manifest["packages"],
                          versions=self._versions(), controller=manifest["built_by"],
                          invocation=self.record.get("id", ""), started=self.record.get("time", ""),
                          contents=contents)
        found, document = attest_disk(self.signer, manifest["disk_digest"], facts)
        manifest.update(attestations=record_summary(found), signed_by=self.signer.keyid)
        self.progress(f"disk: provenance and SBOM signed by key {short_key_id(self.signer.keyid)}")
        return found, document

    def _boot_section(self, disk: str, direct: dict[str, str], root: str) -> dict[str, Any]:
        names = disk_plan.boot_file_names(os.path.basename(disk))
        return disk_plan.boot_section(
            kernel=names["kernel"], kernel_digest=assemble.file_digest(direct["kernel"]),
            kernel_bytes=os.path.getsize(direct["kernel"]), initrd=names["initrd"],
            initrd_digest=assemble.file_digest(direct["initrd"]), initrd_bytes=os.path.getsize(direct["initrd"]),
            command_line=disk_plan.direct_command_line(root, self.params["kernel_args"]), ready_mark=guest.READY_MARK)


def _size(path: str) -> int | None:
    return os.path.getsize(path) if os.path.isfile(path) else None
