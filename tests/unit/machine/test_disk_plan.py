"""The pure decisions of a disk build: sizes, inputs hash, layout, units and boot files."""

from __future__ import annotations

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.machine import plan

MiB = plan.MiB


def inputs(**changes):
    given = dict(image_id="sha256:" + "a" * 64, image_inputs_hash="b" * 64, kernel_package="linux-image-cloud-amd64",
                 packages=[], boot={"hostname": "web", "ssh_authorized_keys": [], "kernel_args": [],
                                    "command_unit": "auto"}, size=2 * 1024 * MiB, disk_format="qcow2")
    given.update(changes)
    return plan.disk_inputs(**given)


@pytest.mark.parametrize("text, expected", [("2G", 2 * 1024 * MiB), ("512M", 512 * MiB), ("1.5GiB", 1536 * MiB),
                                            ("4096", 4096), (" 3 g ", 3 * 1024 * MiB)])
def test_sizes_are_read_in_binary_units(text, expected):
    assert plan.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "big", "2X", "-1G", "2 G B"])
def test_a_size_that_is_not_one_is_refused(text):
    with pytest.raises(InfraError, match="is not a size"):
        plan.parse_size(text)


def test_the_same_inputs_give_the_same_hash_in_any_package_order():
    assert plan.inputs_hash(inputs(packages=["curl", "jq"])) == plan.inputs_hash(inputs(packages=["jq", "curl"]))


@pytest.mark.parametrize("change", [
    {"image_id": "sha256:" + "c" * 64}, {"image_inputs_hash": "d" * 64}, {"kernel_package": "linux-image-amd64"},
    {"packages": ["curl"]}, {"size": 4 * 1024 * MiB}, {"disk_format": "raw"},
    {"boot": {"hostname": "db", "ssh_authorized_keys": [], "kernel_args": [], "command_unit": "auto"}},
    {"boot": {"hostname": "web", "ssh_authorized_keys": [], "kernel_args": ["quiet"], "command_unit": "auto"}},
])
def test_every_input_changes_the_hash(change):
    assert plan.inputs_hash(inputs(**change)) != plan.inputs_hash(inputs())


def test_the_root_uuid_follows_the_inputs_hash():
    digest = plan.inputs_hash(inputs())
    assert plan.root_uuid(digest) == plan.root_uuid(digest)
    assert plan.root_uuid(digest) != plan.root_uuid(plan.inputs_hash(inputs(size=3 * 1024 * MiB)))


def test_layout_puts_boot_after_the_first_mib_and_root_after_it():
    layout = plan.plan_layout(2048 * MiB, 40 * MiB, 300 * MiB)
    assert layout.boot_start == MiB and layout.boot_size % MiB == 0 and layout.boot_size >= 40 * MiB
    assert layout.root_start == layout.boot_start + layout.boot_size
    assert layout.root_start + layout.root_size <= layout.size
    script = plan.sfdisk_script(layout)
    assert "start=2048," in script and "bootable" in script.splitlines()[2] and "type=83" in script


def test_a_disk_too_small_is_refused_with_the_size_that_would_do():
    with pytest.raises(InfraError, match=r"size 512M is too small .* give at least size: 768M\."):
        plan.plan_layout(512 * MiB, 40 * MiB, 600 * MiB)
    layout = plan.plan_layout(1024 * MiB, 40 * MiB, 600 * MiB)
    assert layout.root_size >= 600 * MiB


@pytest.mark.parametrize("bad", ["-web", "web_1", "a" * 64, "web.example"])
def test_bad_hostnames_are_refused(bad):
    with pytest.raises(InfraError, match="is not a valid host name"):
        plan.validate_hostname(bad)


def test_keys_are_checked_and_normalised():
    assert plan.validate_keys(["ssh-ed25519  AAAAC3Nza  me@host "]) == ["ssh-ed25519 AAAAC3Nza me@host"]
    with pytest.raises(InfraError, match="is not an OpenSSH public key"):
        plan.validate_keys(["-----BEGIN OPENSSH PRIVATE KEY-----"])


def test_packages_must_be_debian_names():
    with pytest.raises(InfraError, match="is not a Debian package name"):
        plan.validate_packages(["curl; rm -rf /"])


HELLO_UNIT = "[Service]\nUser=hello\nExecStart=/usr/local/bin/hello-server /etc/hello/hello.json\n"
CONFIG = {"Cmd": ["/usr/local/bin/hello-server", "/etc/hello/hello.json"], "Entrypoint": None,
          "Env": ["PATH=/usr/bin:/bin", "GREETING=hello world"], "WorkingDir": "/srv", "User": "hello:web"}


def test_auto_writes_no_unit_when_an_enabled_unit_runs_the_command():
    assert not plan.needs_command_unit("auto", CONFIG, {"hello.service": HELLO_UNIT})
    assert plan.needs_command_unit("auto", CONFIG, {"ssh.service": "[Service]\nExecStart=/usr/sbin/sshd -D\n"})
    assert plan.needs_command_unit("always", CONFIG, {"hello.service": HELLO_UNIT})
    assert not plan.needs_command_unit("never", CONFIG, {})


def test_an_image_without_command_gets_no_unit_and_always_says_why():
    assert not plan.needs_command_unit("auto", {"Cmd": None}, {})
    assert not plan.needs_command_unit("auto", {"Cmd": ["bash"]}, {})  # a base image's shell is no service
    with pytest.raises(InfraError, match="has no command"):
        plan.needs_command_unit("always", {"Cmd": []}, {})


def test_the_command_unit_runs_the_command_as_the_container_would():
    unit = plan.command_unit(CONFIG, "acme/web")
    assert "ExecStart=/usr/local/bin/hello-server /etc/hello/hello.json" in unit
    assert 'Environment="GREETING=hello world"' in unit and "Environment=PATH=/usr/bin:/bin" in unit
    assert "WorkingDirectory=/srv" in unit and "User=hello" in unit and "Group=web" in unit
    assert "WantedBy=multi-user.target" in unit


def test_entrypoint_comes_before_cmd():
    unit = plan.command_unit({"Entrypoint": ["/bin/app"], "Cmd": ["--port", "80"]}, "x")
    assert "ExecStart=/bin/app --port 80" in unit


def test_the_boot_menu_and_fstab_name_the_root_by_uuid():
    line = plan.kernel_command_line("1234", ["quiet"])
    assert line.startswith("root=UUID=1234 ") and line.endswith(" quiet") and "console=ttyS0,115200" in line
    assert "APPEND " + line in plan.syslinux_config("vmlinuz", "initrd.img", line)
    assert plan.fstab("1234").splitlines()[-1].startswith("UUID=1234 / ext4 ")


def test_the_install_script_checks_the_kernel_package_first():
    script = plan.install_script("linux-image-cloud-amd64", ["curl"])
    assert script.index("apt-cache show linux-image-cloud-amd64") < script.index("apt-get install")
    assert "exit 3" in script and "curl" in script and "openssh-server" in script


def test_versions_are_read_from_dpkg_query_output():
    versions, release = plan.parse_versions("udev=252.39-1\nlinux-image-cloud-amd64=6.1.176-1\nkernel=6.1.0-50-cloud-amd64\n")
    assert versions == {"udev": "252.39-1", "linux-image-cloud-amd64": "6.1.176-1"}
    assert release == "6.1.0-50-cloud-amd64"


def test_a_cached_disk_counts_only_with_its_hash_its_size_and_its_boot_files():
    found = {"inputs_hash": "h", "disk_bytes": 100, "boot": {"kernel_bytes": 7, "initrd_bytes": 3}}
    files = {"kernel": 7, "initrd": 3}
    assert plan.cache_matches(found, "h", 100, files)
    assert not plan.cache_matches(found, "h", 99, files)
    assert not plan.cache_matches(found, "other", 100, files)
    assert not plan.cache_matches(None, "h", 100, files)
    assert not plan.cache_matches(found, "h", None, files)
    assert not plan.cache_matches(found, "h", 100, {"kernel": 7, "initrd": None})  # the initramfs was removed
    assert not plan.cache_matches(found, "h", 100, {"kernel": 8, "initrd": 3})


def test_the_direct_boot_files_lie_beside_the_disk_and_its_command_line_is_quiet():
    assert plan.boot_file_names("web-0123456789ab.qcow2") == {"kernel": "web-0123456789ab.vmlinuz",
                                                              "initrd": "web-0123456789ab.initrd"}
    line = plan.direct_command_line("1234", ["mitigations=auto"])
    assert line.startswith("root=UUID=1234 rw ") and "quiet" in line.split() and line.endswith(" mitigations=auto")
    assert "console=tty0" not in line  # the serial console only: a VM of the collection has no screen
    section = plan.boot_section(kernel="k", kernel_digest="sha256:1", kernel_bytes=7, initrd="i",
                                initrd_digest="sha256:2", initrd_bytes=3, command_line=line, ready_mark="up")
    assert section["seed"] == {"serial": plan.SEED_SERIAL, "format": "tar", "files": ["hostname", "authorized_keys"]}


def test_the_install_script_fetches_busybox_for_the_initramfs_outside_the_disk():
    script = plan.install_script("linux-image-cloud-amd64", [])
    assert "apt-get download -q busybox-static" in script and "exit 6" in script
    assert f"mkdir -p {plan.INITRAMFS_STAGING}" in script
    versions, _release = plan.parse_versions("udev=1\nkernel=6.1.0\nbusybox-static=1:1.35.0-4\n")
    assert versions["busybox-static"] == "1:1.35.0-4"


def test_file_names_carry_the_short_hash():
    name = plan.disk_file_name("web", "0123456789abcdef" * 4, "qcow2")
    assert name == "web-0123456789ab.qcow2" and plan.manifest_file_name(name) == "web-0123456789ab.json"


def test_a_size_that_cannot_hold_the_image_is_refused_before_anything_starts():
    with pytest.raises(InfraError, match=r"size 256M is too small for this image: it takes 190 MiB .* give at least size: 512M\."):
        plan.check_size_early(256 * MiB, 190 * MiB)
    plan.check_size_early(1024 * MiB, 190 * MiB)
