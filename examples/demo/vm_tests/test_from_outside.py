"""What a client sees of a hello VM: the service answers through the port forwarded to the VM.

These tests run on the controller (verify sets IMMUTABLE_INFRA_FORWARDED_PORTS while the VM runs),
so they also prove the VM's network and the unit that starts the service at boot.
"""

import json
import os
import urllib.request

PORT = 8000


def forwarded(port):
    ports = json.loads(os.environ.get("IMMUTABLE_INFRA_FORWARDED_PORTS") or "{}")
    assert str(port) in ports, f"port {port} is not forwarded to the VM: {ports}"
    return ports[str(port)]


def test_service_answers_from_outside_the_vm(host):
    with urllib.request.urlopen(f"http://127.0.0.1:{forwarded(PORT)}/healthz", timeout=10) as reply:
        assert (reply.status, reply.read()) == (200, b"ok\n")


def test_the_service_starts_at_boot(host):
    assert host.service("hello").is_enabled
    assert host.service("hello").is_running
    assert host.check_output("systemctl is-system-running --wait || true") in ("running", "degraded")
