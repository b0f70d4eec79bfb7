#!/usr/bin/python
# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: disk
short_description: Make a bootable VM disk (qcow2) from a baked image, reusing it when nothing changed
version_added: 0.1.0
description:
  - Starts a build container from the exact image ID of O(image), installs a kernel (O(kernel_package)),
    an initramfs, systemd and an SSH server from the image's own Debian package sources, exports the
    container's filesystem and packs it, without mounting anything, into a partitioned disk that a
    VM's firmware boots (an MBR with syslinux, a FAT boot partition with the kernel and initramfs,
    an ext4 root filesystem made with C(mke2fs -d)).
  - The services the roles enabled start at boot. The image's command (entrypoint, command,
    environment, working directory, user) becomes a systemd unit too, unless an enabled unit
    already runs its program (see O(command_unit)).
  - At every boot a first-boot script sets the host name and root's authorized SSH keys, from
    O(hostname) and O(ssh_authorized_keys), or from a seed drive attached to the VM (a tar
    archive with files C(hostname) and C(authorized_keys) on a virtio disk with serial
    C(iiseed)), so one disk serves many VMs; every VM makes its own SSH host keys (O(ssh_host_key_types)).
  - Beside the disk lie the kernel (C(.vmlinuz)) and a small initramfs (C(.initrd), with busybox and the
    virtio drivers) for B(direct kernel boot), which the collection's own VMs use (qemu C(-kernel),
    C(-initrd), C(-append), or a libvirt domain's C(<kernel>), C(<initrd>), C(<cmdline>)); their digests
    and the command line are in the manifest (C(boot)). The qcow2 alone still boots through its firmware.
  - So that a VM is up in seconds, sshd starts without its pre-start check (its configuration is
    checked with C(sshd -t) when the disk is built) and without PAM unless the image needs it
    (O(sshd_pam)), the units a server VM does not need are masked (O(masked_units)), and a unit
    prints a line on the serial console when sshd runs (C(ready_mark) in the manifest's C(boot)).
  - The disk's B(inputs hash) covers the image's inputs hash and ID, the kernel and boot packages,
    the boot settings and the disk size and format. A disk with the same inputs hash in O(dest) is
    returned with C(changed=false) at once. A JSON manifest beside the disk records the inputs,
    the image ID, the disk's SHA-256 digest, the kernel and package versions, and later the verdict
    of M(immutable.infra.verify) with O(immutable.infra.verify#module:disk).
  - Every build is recorded in the ledger (kind C(disk)). Cache hits are not.
  - Bad input, or a failed build, leaves no disk, no build container and no temporary files.
author:
  - immutable.infra contributors (@immutable-infra)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
  - immutable.infra.action
  - immutable.infra.signing
attributes:
  check_mode:
    support: full
    details: Builds nothing; reports whether a disk would be built.
  diff_mode:
    support: none
options:
  name:
    description:
      - The name of the disk; the file is O(dest)/O(name)V(-)I(<first 12 characters of the inputs hash>)V(.qcow2).
    type: str
    required: true
  image:
    description:
      - The baked image to make the disk from, by ID or reference. It is resolved to its ID once.
    type: str
    required: true
  dest:
    description:
      - The directory for disks and their manifests. Defaults to C(~/.local/share/immutable-infra/disks).
    type: path
  format:
    description:
      - The disk format.
    type: str
    default: qcow2
    choices: [qcow2, raw]
  size:
    description:
      - The size of the disk, like V(2G) or V(512M). A size too small for the image's files is refused
        with the size that would do.
    type: str
    default: 2G
  kernel_package:
    description:
      - The Debian package of the kernel, installed from the image's package sources.
    type: str
    default: linux-image-cloud-amd64
  packages:
    description:
      - More Debian packages to install besides the kernel, C(systemd-sysv), C(udev), C(initramfs-tools)
        and C(openssh-server).
    type: list
    elements: str
    default: []
  kernel_args:
    description:
      - More kernel command line arguments.
    type: list
    elements: str
    default: []
  hostname:
    description:
      - The host name set at boot when no seed drive gives one. Defaults to O(name) with C(.) and C(_) turned into
        C(-).
    type: str
  ssh_authorized_keys:
    description:
      - OpenSSH public keys that may log in as root, for operators. M(immutable.infra.verify) adds a
        key of its own through a seed drive.
    type: list
    elements: str
    default: []
  command_unit:
    description:
      - Whether the image's command becomes the systemd unit C(immutable-infra-command.service).
      - V(auto) writes it when the image has a command and no enabled unit runs the same program.
    type: str
    default: auto
    choices: [auto, always, never]
  ssh_host_key_types:
    description:
      - The SSH host keys every VM makes at its first boot (a VM booting again keeps its own). Ed25519
        alone takes a fraction of a second under emulation; an RSA key can take seconds to many.
    type: list
    elements: str
    default: [ed25519]
  sshd_pam:
    description:
      - Whether sshd uses PAM. V(auto) keeps it only when the image needs it, when root's password is
        locked with C(!) (sshd without PAM refuses such an account) or sshd's PAM stack uses a module
        beyond Debian's own (LDAP, SSSD, access rules, one-time passwords); V(always) and V(never) decide.
      - Without PAM a login is quicker (no session modules, no systemd user session).
    type: str
    default: auto
    choices: [auto, always, never]
  masked_units:
    description:
      - systemd units masked on the disk (links to C(/dev/null)), and generators by their name (ending
        in C(-generator)). The default lists units a server VM does not need, each with its reason in
        the collection's docs/machine-images.md (apt-daily timers, e2scrub, debug and tracing filesystems,
        binfmt, utmp records, console logins, the random seed, sysusers, remount-fs). V([]) masks nothing.
    type: list
    elements: str
    default: [apt-daily.timer, apt-daily-upgrade.timer, dpkg-db-backup.timer, e2scrub_all.timer,
              e2scrub_reap.service, systemd-binfmt.service, proc-sys-fs-binfmt_misc.automount,
              sys-kernel-debug.mount, sys-kernel-tracing.mount, sys-kernel-config.mount,
              sys-fs-fuse-connections.mount, dev-hugepages.mount, dev-mqueue.mount, systemd-update-utmp.service,
              systemd-update-utmp-runlevel.service, getty-static.service, serial-getty@ttyS0.service,
              systemd-random-seed.service, systemd-sysusers.service, systemd-remount-fs.service]
  force:
    description:
      - Build again even when a disk with the same inputs hash exists.
    type: bool
    default: false
  network:
    description:
      - The Docker network of the build container (it downloads the boot packages).
    type: str
  build_timeout:
    description:
      - Seconds the build container may take to install the boot packages (one call to the Docker engine);
        the engine is waited on for the larger of this and O(timeout).
    type: int
    default: 1800
requirements:
  - qemu-utils, e2fsprogs, dosfstools, mtools, syslinux and fdisk (Debian packages) on the controller
  - root on the controller, so the files keep their owners in the disk
"""

EXAMPLES = r"""
- name: Make a VM disk of the baked image
  immutable.infra.disk:
    name: web
    image: "{{ baked.image_id }}"
    size: 2G
    ssh_authorized_keys:
      - "{{ lookup('ansible.builtin.file', '~/.ssh/id_ed25519.pub') }}"
  register: web_disk

- name: Boot it under qemu and run the image's tests against the VM
  immutable.infra.verify:
    disk: "{{ web_disk.disk }}"
    tests: [tests/]
    wait_for_ports: [8000]
"""

RETURN = r"""
signed_by:
  description: The key ID (sha256 of the public key) of O(signing_key), which signed the disk's provenance and SBOM.
  returned: when a disk was built with signing_key
  type: str
  sample: sha256:830d9f3976519c0f3be4a4b5e2b8f2a7d4e0c1b2a3f4e5d6c7b8a9f0e1d2c3b4
attestations:
  description:
    - Per kind (C(provenance), C(sbom)) the keyids of its signatures, the sha256 of its DSSE envelope and its predicate
      type; the provenance envelope in full. The same is in the ledger record (docs/attestations.md).
  returned: when a disk was built with signing_key
  type: dict
disk:
  description: Path of the disk.
  returned: always
  type: str
  sample: /root/.local/share/immutable-infra/disks/web-5b1e0c9d2f4a.qcow2
manifest:
  description: Path of the manifest beside the disk.
  returned: always
  type: str
  sample: /root/.local/share/immutable-infra/disks/web-5b1e0c9d2f4a.json
name:
  description: O(name).
  returned: always
  type: str
inputs_hash:
  description: SHA-256 of everything that decides the content of the disk.
  returned: always
  type: str
image:
  description: O(image) as given.
  returned: always
  type: str
image_id:
  description: ID of the image the disk was made from.
  returned: always
  type: str
image_inputs_hash:
  description: The inputs hash of the image (its C(immutable.infra.inputs_hash) label), null for images not baked by the collection.
  returned: always
  type: str
cache_hit:
  description: Whether a disk with this inputs hash already existed, so nothing was built.
  returned: always
  type: bool
disk_digest:
  description: SHA-256 of the disk file, as C(sha256:<hex>).
  returned: unless in check mode when a build would happen
  type: str
kernel_release:
  description: The kernel release on the disk.
  returned: unless in check mode when a build would happen
  type: str
  sample: 6.1.0-41-cloud-amd64
packages:
  description: Versions of the kernel and boot packages on the disk.
  returned: unless in check mode when a build would happen
  type: dict
  sample: {"linux-image-cloud-amd64": "6.1.158-1", "systemd-sysv": "252.39-1~deb12u1"}
boot:
  description:
    - How a VM boots the disk directly, for qemu or a libvirt domain; the same as the manifest's C(boot),
      with the files' full paths.
  returned: unless in check mode when a build would happen
  type: dict
  contains:
    kernel:
      description: Path of the kernel beside the disk.
      type: str
    initrd:
      description: Path of the small initramfs beside the disk.
      type: str
    command_line:
      description: The kernel command line of direct boot.
      type: str
    ready_mark:
      description: The line the disk prints on the serial console once sshd runs.
      type: str
  sample: {"kernel": "/root/.local/share/immutable-infra/disks/web-5b1e0c9d2f4a.vmlinuz",
           "initrd": "/root/.local/share/immutable-infra/disks/web-5b1e0c9d2f4a.initrd",
           "command_line": "root=UUID=5b1e0c9d-2f4a-... rw console=ttyS0,115200 quiet panic=10",
           "ready_mark": "immutable-infra: ssh ready"}
verdict:
  description: The latest verdict recorded in the manifest, null when the disk was never verified.
  returned: unless in check mode when a build would happen
  type: dict
command_unit:
  description: Whether the image's command was written as a systemd unit.
  returned: when a disk was built
  type: bool
reason:
  description: Why a disk is built or would be built.
  returned: when a disk is built or would be built
  type: str
would_build:
  description: In check mode, true when a disk would be built.
  returned: check mode, when no disk matches
  type: bool
ledger:
  description: Path of the ledger the build was recorded in.
  returned: when a disk was built
  type: str
duration:
  description: Seconds the task took.
  returned: always
  type: float
msg:
  description: What happened, in one line.
  returned: always
  type: str
"""
