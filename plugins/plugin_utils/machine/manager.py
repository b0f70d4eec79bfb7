# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The disk build: a bootable VM disk from a baked image, reused when its inputs did not change.

A build container started from the exact image ID gets a kernel, an initramfs, systemd and SSH
from the image's own Debian sources; its filesystem is exported, made bootable (tree.py) and packed
into a partitioned disk (assemble.py). A manifest beside the disk records what went in; the ledger
records every build.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
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
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.machine import assemble
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
    "force": {"type": "bool", "default": False},
    "network": {"type": "str"},
    "timeout": {"type": "int", "default": 1800},
    **SIGNING_OPTIONS,
}


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
        disk_plan.validate_packages([params["kernel_package"]], "kernel_package")
        if params["timeout"] <= 0:
            raise InfraError("timeout must be a positive number of seconds.")
        self.dest = os.path.normpath(os.path.join(self.basedir, os.path.expanduser(params["dest"] or DEFAULT_DEST)))
        self.signer = signing_key_from(params, self.basedir)
        self.record: dict[str, Any] = {}

    def _boot_settings(self) -> dict[str, Any]:
        return {"hostname": self.hostname, "ssh_authorized_keys": self.keys, "kernel_args": self.params["kernel_args"],
                "command_unit": self.params["command_unit"]}

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        client = DockerClient(self.params["docker_host"], timeout=self.params["timeout"])
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
        disk_bytes = os.path.getsize(disk) if os.path.isfile(disk) else None
        if found is not None and disk_plan.cache_matches(found, digest, disk_bytes) and not self.params["force"]:
            return self._reused(result, found, started)
        reason = ("force: true" if disk_bytes is not None and self.params["force"] else
                  "the disk beside the manifest is missing or was changed" if found else "no disk has these inputs yet")
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
                    command_unit=built["command_unit"], duration=built["build_seconds"], ledger=ledger.path, **signed_fields(built),
                    msg=f"built {os.path.basename(disk)} ({built['disk_bytes'] / disk_plan.MiB:.0f} MiB, kernel "
                        f"{built['kernel_release']}) in {built['build_seconds']:.1f} s")

    def _reused(self, result: dict[str, Any], found: dict[str, Any], started: float) -> dict[str, Any]:
        name, digest = os.path.basename(result["disk"]), result["inputs_hash"]
        self.progress(f"disk: {name} has these inputs already (inputs hash {digest[:12]}), reused")
        return dict(result, changed=False, cache_hit=True, disk_digest=found["disk_digest"],
                    kernel_release=found.get("kernel_release"), packages=found.get("packages") or {},
                    verdict=found.get("verdict"), duration=round(time.monotonic() - started, 3),
                    msg=f"{name} is up to date (inputs hash {digest[:12]})")

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
                versions, release = self._install(client, container_id)
                tree = os.path.join(work, "root")
                self.progress("disk: exporting the root filesystem")
                disk_tree.export_tree(client, container_id, tree)
                with guard.shield():
                    client.remove_container(container_id)
                container_id = None
                return self._pack(image, digest, inputs, tree, work, disk, manifest_path, versions, release, started,
                                  guard)
            finally:
                with guard.shield():
                    if container_id:
                        client.remove_container(container_id)
                    else:
                        client.remove_container(container_name)  # a signal may come before the ID is known
                    if work:
                        shutil.rmtree(work, ignore_errors=True)

    def _install(self, client: DockerClient, container_id: str) -> tuple[dict[str, str], str]:
        packages = [self.params["kernel_package"], *sorted(set(disk_plan.BOOT_PACKAGES + self.packages))]
        self.progress(f"disk: installing {', '.join(packages)} from the image's package sources")
        builder.prepare(client, container_id)
        code, output = client.exec(container_id, ["/bin/sh", "-c", disk_plan.install_script(
            self.params["kernel_package"], self.packages)])
        if code == 3:
            raise InfraError(f"Kernel package {self.params['kernel_package']} is not available from the image's "
                             "package sources; give a kernel_package that apt-cache show finds (for example "
                             "linux-image-cloud-amd64 on Debian).")
        if code == 4:
            raise InfraError("The build container could not update its package lists from the image's apt "
                             f"sources (are they reachable from containers?): {output.strip()[-600:]}")
        if code != 0:
            raise InfraError(f"Installing the boot packages failed: {output.strip()[-1200:]}")
        builder.finish(client, container_id, builder.DEFAULT_CLEANUP_PATHS)
        code, output = client.exec(container_id, ["/bin/sh", "-c", disk_plan.VERSIONS_SCRIPT, "versions", *packages])
        return disk_plan.parse_versions(output)

    def _pack(self, image: dict[str, Any], digest: str, inputs: dict[str, Any], tree: str, work: str, disk: str,
              manifest_path: str, versions: dict[str, str], release: str, started: float,
              guard: Guard) -> dict[str, Any]:
        kernel, initrd = assemble.boot_files(tree)
        boot_bytes = os.path.getsize(kernel) + os.path.getsize(initrd)
        layout = disk_plan.plan_layout(self.size, boot_bytes, assemble.tree_bytes(tree))
        root = disk_plan.root_uuid(digest)
        config = disk_tree.config_of(image)
        write_unit = disk_plan.needs_command_unit(self.params["command_unit"], config, disk_tree.enabled_units(tree))
        disk_tree.make_bootable(tree, root_uuid=root, hostname=self.hostname, keys=self.keys,
                                command_unit=disk_plan.command_unit(config, self._describe(image["Id"]))
                                if write_unit else None)
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
        disk_digest = assemble.file_digest(staged)
        manifest = disk_plan.manifest(
            name=self.name, digest=digest, inputs=inputs, disk_file=os.path.basename(disk), disk_digest=disk_digest,
            disk_bytes=os.path.getsize(staged), image=self.params["image"], kernel_release=release,
            versions=versions, command_line=command_line, command_unit_written=write_unit, created=utc_timestamp(),
            built_by=controller_identity(), duration=round(time.monotonic() - started, 3),
            exposed_ports=sorted((config.get("ExposedPorts") or {}).keys()))
        sidecars = self._attest(manifest, image, contents) if contents is not None else None
        with guard.shield():
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
