"""The host runs the image the bake role produced: the service is there, the bake left nothing behind."""


def test_the_roles_result_is_in_the_image(host):
    assert host.file("/usr/local/bin/hello-server").mode == 0o755
    assert host.file("/etc/hello/hello.json").exists
    assert host.user("hello").exists


def test_the_image_command_runs_the_service(host):
    assert "hello-server" in host.file("/proc/1/cmdline").content_string
    assert host.check_output("stat -c %U /proc/1") == "hello"


def test_no_residue_of_the_bake(host):
    for path in ("/usr/sbin/policy-rc.d", "/usr/local/sbin/systemctl", "/run/immutable-infra-bake",
                 "/root/.ansible", "/etc/dpkg/dpkg.cfg.d/zz-immutable-infra-bake"):
        assert not host.file(path).exists, f"{path} was left in the image"
