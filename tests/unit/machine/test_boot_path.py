"""The quick boot path, as data: the small initramfs, the guest's files, the qemu command and the timeline."""

from __future__ import annotations

import gzip
import io
import lzma
import pathlib
import re
import tarfile

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.machine import boot, guest, initramfs, timeline

VIRTIO = "kernel/drivers/virtio/"
MODULES_DEP = f"""{VIRTIO}virtio.ko:
{VIRTIO}virtio_ring.ko:
{VIRTIO}virtio_pci_modern_dev.ko:
{VIRTIO}virtio_pci_legacy_dev.ko:
{VIRTIO}virtio_pci.ko: {VIRTIO}virtio_pci_legacy_dev.ko {VIRTIO}virtio_pci_modern_dev.ko {VIRTIO}virtio_ring.ko {VIRTIO}virtio.ko
kernel/drivers/block/virtio_blk.ko.xz: {VIRTIO}virtio_ring.ko {VIRTIO}virtio.ko
kernel/drivers/char/hw_random/virtio-rng.ko: {VIRTIO}virtio_ring.ko {VIRTIO}virtio.ko
kernel/fs/fuse/fuse.ko:
"""


def test_modules_load_after_their_dependencies_each_once():
    order = initramfs.load_order(MODULES_DEP, ["virtio_pci", "virtio_blk", "virtio_rng", "ext4"])
    names = [path.rsplit("/", 1)[1] for path in order]
    assert names == ["virtio_pci_legacy_dev.ko", "virtio_pci_modern_dev.ko", "virtio_ring.ko", "virtio.ko",
                     "virtio_pci.ko", "virtio_blk.ko.xz", "virtio-rng.ko"]
    # ext4 is built into the kernel (not in modules.dep): nothing to load


def read_cpio(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """name -> (mode, content, device) of a newc archive."""
    members, offset = {}, 0
    while True:
        header = data[offset:offset + 110]
        assert header[:6] == b"070701"
        fields = [int(header[6 + 8 * index:14 + 8 * index], 16) for index in range(13)]
        name_size, file_size = fields[11], fields[6]
        start = offset + 110
        name = data[start:start + name_size - 1].decode()
        start += name_size + (-(110 + name_size) % 4)
        content = data[start:start + file_size]
        offset = start + file_size + (-file_size % 4)
        if name == "TRAILER!!!":
            return members
        members[name] = (fields[1], content, (fields[9], fields[10]))


def test_the_initramfs_holds_busybox_its_applets_the_modules_in_order_and_init():
    modules = [("kernel/drivers/virtio/virtio.ko", b"\x7fELF virtio"),
               ("kernel/drivers/block/virtio_blk.ko.xz", lzma.compress(b"\x7fELF blk"))]
    archive = initramfs.build(b"\x7fELF busybox", modules)
    members = read_cpio(gzip.decompress(archive))
    assert members["bin/busybox"][1] == b"\x7fELF busybox" and members["bin/busybox"][0] == 0o100755
    assert members["bin/switch_root"] == (0o120777, b"busybox", (0, 0))
    assert members["lib/modules/virtio_blk.ko"][1] == b"\x7fELF blk"  # unpacked at build: busybox's insmod loads it
    assert members["etc/modules.order"][1] == b"virtio.ko\nvirtio_blk.ko\n"
    assert members["dev/console"][2] == (5, 1)
    assert members["init"][0] == 0o100755 and b"switch_root /root" in members["init"][1]
    assert initramfs.build(b"\x7fELF busybox", modules) == archive  # same inputs, same bytes


def test_the_initramfs_is_made_for_the_kernel_command_line_it_reads():
    script = initramfs.INIT_SCRIPT
    assert "root=*)" in script and "rootfstype=*)" in script and "findfs" in script
    assert 'mount -o move "/$place" "/root/$place"' in script


def test_first_boot_sets_the_identity_and_the_host_keys_unit_keeps_existing_keys():
    assert "/proc/sys/kernel/hostname" in guest.FIRSTBOOT_SCRIPT and guest.SEED_SERIAL in guest.FIRSTBOOT_SCRIPT
    assert "ssh-keygen" not in guest.FIRSTBOOT_SCRIPT  # the keys are made beside the network's start
    unit = guest.hostkeys_unit(["ed25519", "rsa"])
    assert "ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key" in unit and "Before=ssh.service" in unit
    assert unit.count("ExecStart=/usr/bin/ssh-keygen") == 2 and "-t rsa" in unit


def test_sshd_gets_only_the_host_keys_asked_for_and_pam_only_when_needed():
    config = guest.sshd_config(["ed25519"], pam=False)
    assert "HostKey /etc/ssh/ssh_host_ed25519_key" in config and "rsa" not in config and "UsePAM no" in config
    assert "UsePAM yes" in guest.sshd_config(["ed25519"], pam=True)
    debian = "module pam_unix\nmodule pam_env\nmodule pam_limits\n"
    assert guest.needs_pam("auto", debian) is False
    assert guest.needs_pam("auto", debian + "module pam_sss\n") is True  # logins through SSSD
    assert guest.needs_pam("auto", "root-locked\n" + debian) is True  # sshd without PAM refuses a '!' password
    assert guest.needs_pam("never", "module pam_sss\n") is False and guest.needs_pam("always", "") is True
    assert "ExecStartPre=\n" in guest.SSH_SERVICE_OVERRIDE


@pytest.mark.parametrize("types, message", [(["dsa"], "dsa"), ([], "none")])
def test_unknown_host_key_types_are_refused(types, message):
    with pytest.raises(InfraError, match=f"ssh_host_key_types must name one or more of ed25519, ecdsa, rsa; got {message}"):
        guest.validate_key_types(types)


def test_masks_are_units_or_generators_in_their_own_places():
    assert guest.mask_path("apt-daily.timer") == "/etc/systemd/system/apt-daily.timer"
    assert guest.mask_path("systemd-gpt-auto-generator") == "/etc/systemd/system-generators/systemd-gpt-auto-generator"
    assert guest.validate_masked(["a.service", "a.service"]) == ["a.service"]
    for bad in ["../etc/passwd", "apt-daily", ""]:
        with pytest.raises(InfraError, match="is not a systemd unit name"):
            guest.validate_masked([bad])
    assert all(reason for reason in guest.MASKED_UNITS.values())


def spec(**changes):
    given = dict(overlay="/w/overlay.qcow2", seed="/w/seed.tar", console="/w/console.log", accel="tcg", memory=512,
                 cpus=2, forwards={22: 40022, 8000: 48000},
                 direct=boot.DirectBoot("/d/web.vmlinuz", "/d/web.initrd", "root=UUID=1 rw quiet"))
    given.update(changes)
    return boot.VmSpec(**given)


def test_direct_boot_gives_qemu_the_kernel_initramfs_and_command_line():
    command = boot.qemu_command(spec())
    assert command[command.index("-kernel") + 1] == "/d/web.vmlinuz"
    assert command[command.index("-append") + 1] == "root=UUID=1 rw quiet"
    assert "-nodefaults" in command and command[command.index("-cpu") + 1] == boot.TCG_CPU
    assert "virtio-blk-pci,drive=disk" in command  # no boot index: qemu boots the kernel itself
    assert "virtio-blk-pci,drive=seed,serial=iiseed" in command
    netdev = command[command.index("-netdev") + 1]
    assert "hostfwd=tcp:127.0.0.1:40022-:22" in netdev and "hostfwd=tcp:127.0.0.1:48000-:8000" in netdev


def test_firmware_boot_starts_from_the_disk_and_kvm_uses_the_host_cpu():
    command = boot.qemu_command(spec(direct=None, accel="kvm"))
    assert "-kernel" not in command and "virtio-blk-pci,drive=disk,bootindex=0" in command
    assert command[command.index("-cpu") + 1] == "host"


def test_the_boot_path_and_the_vcpus_are_chosen_from_the_disk_and_the_cores():
    direct = boot.DirectBoot("k", "i", "c")
    assert boot.choose_path("auto", direct) is direct and boot.choose_path("auto", None) is None
    assert boot.choose_path("firmware", direct) is None
    with pytest.raises(InfraError, match="has no direct-boot kernel"):
        boot.choose_path("direct", None)
    assert boot.direct_boot({"boot": {"kernel": "a.vmlinuz", "initrd": "a.initrd", "command_line": "x"}}, "/d") == \
        boot.DirectBoot("/d/a.vmlinuz", "/d/a.initrd", "x")
    assert boot.direct_boot({}, "/d") is None
    assert boot.choose_cpus(None, 2) == 2 and boot.choose_cpus(None, 1) == 1
    assert boot.choose_cpus(None, 2, at_once=3) == 1 and boot.choose_cpus(None, 8, at_once=3) == 2
    assert boot.choose_cpus(3, 2) == 3
    with pytest.raises(InfraError, match="cpus must be 1 or more"):
        boot.choose_cpus(0, 2)


def test_the_seed_is_a_tar_of_the_host_name_and_keys():
    data = boot.seed_archive("web-1", ["ssh-ed25519 AAAA a", "ssh-ed25519 BBBB b"])
    assert len(data) % 512 == 0 and boot.seed_archive("web-1", ["ssh-ed25519 AAAA a", "ssh-ed25519 BBBB b"]) == data
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        assert archive.extractfile("hostname").read() == b"web-1\n"
        assert archive.extractfile("authorized_keys").read() == b"ssh-ed25519 AAAA a\nssh-ed25519 BBBB b\n"


FACTS = """UserspaceTimestampMonotonic=2600000
FinishTimestampMonotonic=8100000

After=local-fs.target
Id=immutable-infra-firstboot.service
InactiveExitTimestampMonotonic=4000000
ActiveEnterTimestampMonotonic=4600000

Id=systemd-networkd.service
After=network-pre.target systemd-udevd.service
InactiveExitTimestampMonotonic=5000000
ActiveEnterTimestampMonotonic=6500000

Id=ssh.service
After=network.target auditd.service
InactiveExitTimestampMonotonic=6600000
ActiveEnterTimestampMonotonic=7000000

Id=hello.service
After=network.target
InactiveExitTimestampMonotonic=6600000
ActiveEnterTimestampMonotonic=6600000

Id=network-pre.target
After=immutable-infra-firstboot.service
InactiveExitTimestampMonotonic=4600000
ActiveEnterTimestampMonotonic=4600000

Id=network.target
After=systemd-networkd.service network-pre.target
InactiveExitTimestampMonotonic=6500000
ActiveEnterTimestampMonotonic=6500000

Id=multi-user.target
After=ssh.service hello.service basic.target
InactiveExitTimestampMonotonic=7000000
ActiveEnterTimestampMonotonic=7000000

Id=auditd.service

[    1.600000] Run /init as init process
"""


def test_the_timeline_joins_the_launchers_marks_and_the_guests_clock():
    boot_timeline = timeline.timeline({"ready_line": 7.6, "ssh": 8.4, "ports": 8.9}, 0.5, timeline.facts(FACTS))
    marks = boot_timeline["marks"]
    assert marks == {"kernel": 0.5, "initramfs": 2.1, "systemd": 3.1, "boot_finished": 8.6, "first_boot": 5.1,
                     "sshd": 7.5, "ready_line": 7.6, "ssh": 8.4, "ports": 8.9}
    assert [(phase["phase"], phase["seconds"]) for phase in boot_timeline["phases"]] == [
        ("firmware", 0.5), ("kernel", 1.6), ("initramfs", 1.0), ("systemd to first boot", 2.0),
        ("first boot to sshd", 2.4), ("sshd to a login", 0.9), ("login to the ports", 0.5)]
    assert boot_timeline["units"]["systemd-networkd.service"] == {"started": 5.5, "active": 7.0}
    assert "network.target" not in boot_timeline["units"]  # targets show in the chain only
    assert [link["unit"] for link in boot_timeline["critical_chain"]] == [
        "multi-user.target", "ssh.service", "network.target", "systemd-networkd.service", "network-pre.target",
        "immutable-infra-firstboot.service"]
    assert boot_timeline["critical_chain"][1] == {"unit": "ssh.service", "at": 7.5, "took": 0.4}
    assert timeline.summary(boot_timeline).startswith("firmware 0.5 s, kernel 1.6 s, initramfs 1.0 s")


def test_without_the_guest_the_timeline_has_the_launchers_marks_only():
    boot_timeline = timeline.timeline({"ssh": 30.2, "ports": None}, None, None)
    assert boot_timeline["marks"] == {"ssh": 30.2} and boot_timeline["critical_chain"] == []
    assert boot_timeline["phases"] == [{"phase": "sshd to a login", "until": "ssh", "seconds": 30.2}]


def test_the_facts_command_asks_for_the_roles_units_and_the_boot_targets():
    script = timeline.facts_script(["hello.service"])
    assert "'hello.service'" in script and "'multi-user.target'" in script and " as init process" in script


def test_the_docs_list_every_masked_unit_with_its_reason():
    text = (pathlib.Path(__file__).resolve().parents[3] / "docs" / "machine-images.md").read_text(encoding="utf-8")
    section = text.split("### Masked units", 1)[1].split("\n## ", 1)[0]
    assert dict(re.findall(r"^\| `([^`]+)` \| (.+) \|$", section, re.MULTILINE)) == guest.MASKED_UNITS
