"""A stock server-template (placeholders at 127.0.0.1:9, `check disabled`) as HAProxy 2.6 reports it."""

from __future__ import annotations

from ansible_collections.immutable.infra.plugins.plugin_utils.balancer import haproxy
from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.haproxy_backend import HAProxyBalancer

# slot1 a placeholder as configured (maint, 127.0.0.1:9), slot2 taken and ready, slot3 a placeholder that a
# rollout took and gave back (parked at 0.0.0.0), slot4 taken then left in maint by an interrupted park.
STOCK_STATE = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight \
srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state \
bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr \
srv_agent_addr srv_agent_port
3 web 1 slot1 127.0.0.1 0 5 1 1 4 1 0 0 14 0 0 0 - 9 - 0 0 - - 0
3 web 2 slot2 172.17.0.5 2 4 1 1 16 15 3 3 6 0 0 0 - 8000 - 0 0 - - 0
3 web 3 slot3 0.0.0.0 0 5 1 1 14 8 2 0 10 0 0 0 - 9 - 0 0 - - 0
3 web 4 slot4 172.17.0.9 0 5 1 1 14 8 2 0 10 0 0 0 - 8000 - 0 0 - - 0
"""


class FakeRuntime:
    def __init__(self, servers):
        self._servers = servers

    def servers(self, backend):
        return self._servers


def stock_servers():
    return haproxy.server_records("web", haproxy.parse_servers_state(STOCK_STATE), [])


def test_placeholders_in_maintenance_are_free_slots_whatever_their_address():
    servers = {server.name: server for server in stock_servers()}
    assert servers["slot1"].template_slot and servers["slot1"].free_slot
    assert (servers["slot1"].address, servers["slot1"].port) == ("127.0.0.1", 9)
    assert servers["slot3"].free_slot and servers["slot4"].free_slot
    assert servers["slot2"].template_slot and not servers["slot2"].free_slot


def test_only_taken_slots_are_members_so_a_stock_backend_has_no_stale_server():
    balancer = HAProxyBalancer({"runtime_api": "/nonexistent.sock", "backend": "web", "server_options": [],
                                "up_timeout": 5, "trust_gate": True})
    balancer.runtime = FakeRuntime(stock_servers())  # type: ignore[assignment]
    assert [server.name for server in balancer.members(lambda name: False)] == ["slot2"]


def test_lost_servers_are_those_gone_moved_or_out_of_ready():
    balancer = HAProxyBalancer({"runtime_api": "/nonexistent.sock", "backend": "web", "server_options": [],
                                "up_timeout": 5, "trust_gate": True})
    balancer.runtime = FakeRuntime(stock_servers())  # type: ignore[assignment]
    expected = {"slot2": ("172.17.0.5", 8000),   # still there, ready
                "slot4": ("172.17.0.9", 8000),   # there, but in maintenance (as after a restart)
                "slot1": ("172.17.0.7", 8000),   # its slot back at the placeholder
                "slot9": ("172.17.0.8", 8000)}   # no such server any more
    assert balancer.lost(expected) == ["slot4", "slot1", "slot9"]
    assert balancer.lost({"slot2": ("172.17.0.5", 8001)}) == ["slot2"]  # another port is another endpoint
