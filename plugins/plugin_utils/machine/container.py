# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The disk build's container steps: the boot packages from the image's own sources, busybox for
the direct-boot initramfs, and sshd's settings, checked where the image's own sshd can run."""

from __future__ import annotations

from collections.abc import Callable

from ansible_collections.immutable.infra.plugins.plugin_utils.bake import builder
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.machine import guest
from ansible_collections.immutable.infra.plugins.plugin_utils.machine import plan as disk_plan

INSTALL_ERRORS = {
    3: "Kernel package {kernel} is not available from the image's package sources; give a kernel_package that "
       "apt-cache show finds (for example linux-image-cloud-amd64 on Debian).",
    4: "The build container could not update its package lists from the image's apt sources (are they reachable "
       "from containers?): {output}",
    6: "The build container could not download busybox-static (for the direct-boot initramfs) from the image's "
       "package sources: {output}",
}


def install(client: DockerClient, container_id: str, kernel_package: str, packages: list[str],
            progress: Callable[[str], None]) -> tuple[dict[str, str], str]:
    """Installs the kernel and the boot packages; (package versions, kernel release)."""
    wanted = [kernel_package, *sorted(set(disk_plan.BOOT_PACKAGES + packages))]
    progress(f"disk: installing {', '.join(wanted)} from the image's package sources")
    builder.prepare(client, container_id)
    code, output = client.exec(container_id, ["/bin/sh", "-c", disk_plan.install_script(kernel_package, packages)])
    if code in INSTALL_ERRORS:
        raise InfraError(INSTALL_ERRORS[code].format(kernel=kernel_package, output=output.strip()[-600:]))
    if code != 0:
        raise InfraError(f"Installing the boot packages failed: {output.strip()[-1200:]}")
    builder.finish(client, container_id, builder.DEFAULT_CLEANUP_PATHS)
    code, output = client.exec(container_id, ["/bin/sh", "-c", disk_plan.VERSIONS_SCRIPT, "versions", *wanted])
    return disk_plan.parse_versions(output)


def settle_sshd(client: DockerClient, container_id: str, key_types: list[str], pam_mode: str) -> bool:
    """Writes the disk's sshd settings and runs sshd's own check on them once, here, so that every
    boot can start sshd without it. Returns whether sshd keeps PAM."""
    facts = client.exec(container_id, ["/bin/sh", "-c", guest.SSHD_FACTS_SCRIPT])[1]
    pam = guest.needs_pam(pam_mode, facts)
    client.put_files(container_id, [(guest.SSHD_DROPIN, guest.sshd_config(key_types, pam).encode(), 0o644)])
    code, output = client.exec(container_id, ["/bin/sh", "-c", guest.SSHD_CHECK_SCRIPT])
    if code != 0:
        raise InfraError("The image's SSH server configuration does not pass sshd's own check (sshd -t) with the "
                         f"disk's settings: {output.strip()[-600:]}")
    return pam
