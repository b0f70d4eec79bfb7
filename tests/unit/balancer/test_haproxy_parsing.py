"""The HAProxy adapter's pure parts, on text HAProxy 2.6's runtime API really printed."""

from __future__ import annotations

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.balancer import haproxy
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError

SHOW_BACKEND = "# name\nweb\napi\n\n"

# slot1 taken and ready, slot2 parked (free), slot3 taken and draining; app-1 added with `add server`.
SHOW_SERVERS_STATE = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight \
srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state \
bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr \
srv_agent_addr srv_agent_port
3 web 1 slot1 127.0.0.1 2 4 1 1 16 15 3 3 6 0 0 0 - 18081 - 0 0 - - 0
3 web 2 slot2 0.0.0.0 0 5 1 1 14 8 2 0 10 0 0 0 - 80 - 0 0 - - 0
3 web 3 slot3 127.0.0.1 2 12 1 1 2 15 3 3 6 0 0 0 - 18082 - 0 0 - - 0

"""

SHOW_SERVERS_STATE_API = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight \
srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state \
bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr \
srv_agent_addr srv_agent_port
4 api 1 app-1 127.0.0.1 0 8 1 1 1 8 2 0 6 0 0 0 - 18099 - 0 0 - - 0
4 api 2 app-2 10.0.0.7 2 0 1 1 1 1 0 0 0 0 0 0 - 8080 - 0 0 - - 0

"""

STAT_HEADER = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,"
    "act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,"
    "check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,"
    "req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,"
    "rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,"
    "agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,"
    "wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,"
    "idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,"
    "agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,"
    "h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,"
    "h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,"
    "h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,"
    "h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,\n"
)
TAIL = ",,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,\n"
SHOW_STAT = STAT_HEADER + (
    "web,slot1,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,1,1,0,0,0,15,0,,1,3,1,,0,,2,0,,0,L7OK,200,1,0,0,0,0,0,0,,,,0,0,0,,,,,"
    "-1,,,0,0,0,0,,,,Layer7 check passed,,2,2,3,,,,127.0.0.1:18081,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,1"
    + TAIL +
    "web,slot2,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT,1,1,0,0,0,1,1,,1,3,2,,0,,2,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,"
    "0,0,,,,,,,,,,,,0.0.0.0:80,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,0,1" + TAIL +
    "web,slot3,1,1,2,2,,5,0,0,,0,,0,0,0,0,DRAIN,1,1,0,0,0,1,0,,1,3,3,,0,,2,0,,0,* L7OK,200,1,0,0,0,0,0,0,,,,0,0,0,,,,"
    ",-1,,,0,0,0,0,,,,Layer7 check passed,,2,2,3,,,,127.0.0.1:18082,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,1"
    + TAIL
)
SHOW_STAT_API = STAT_HEADER + (
    "api,app-1,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1,1,0,1,1,13,13,,1,4,1,,0,,2,0,,0,L4CON,,0,0,0,0,0,0,0,,,,0,0,0,,,,,"
    "-1,Connection refused,,0,0,0,0,,,,Layer4 connection problem,,2,2,0,,,,127.0.0.1:18099,,http,,,,,,,,0,0,0,,,0,,"
    "0,0,0,0,0,0,0,0,1,1" + TAIL
)


def records(state=SHOW_SERVERS_STATE, stat=SHOW_STAT, backend="web"):
    return {server.name: server for server in haproxy.server_records(
        backend, haproxy.parse_servers_state(state), haproxy.parse_stat_csv(stat))}


def test_backends_are_the_names_show_backend_lists():
    assert haproxy.parse_backends(SHOW_BACKEND) == ["web", "api"]
    assert haproxy.parse_backends("# name\n\n") == []


def test_servers_state_rows_are_keyed_by_column_name():
    rows = haproxy.parse_servers_state(SHOW_SERVERS_STATE)
    assert [row["srv_name"] for row in rows] == ["slot1", "slot2", "slot3"]
    assert rows[0]["srv_addr"] == "127.0.0.1" and rows[0]["srv_port"] == "18081" and rows[0]["be_name"] == "web"


@pytest.mark.parametrize("text", ["", "Can't find backend.\n", "2\n# be_id be_name\n", "1\nbe_id be_name\n"])
def test_unexpected_servers_state_output_is_an_error(text):
    with pytest.raises(InfraError, match="unexpected format"):
        haproxy.parse_servers_state(text)


def test_stat_csv_rows_are_keyed_by_column_name():
    rows = haproxy.parse_stat_csv(SHOW_STAT)
    assert [(row["svname"], row["status"], row["scur"]) for row in rows] == [
        ("slot1", "UP", "0"), ("slot2", "MAINT", "0"), ("slot3", "DRAIN", "2")]
    with pytest.raises(InfraError, match="unexpected format"):
        haproxy.parse_stat_csv("No such proxy.\n")


def test_a_ready_slot_in_use():
    slot = records()["slot1"]
    assert (slot.address, slot.port, slot.admin_state, slot.operational_state) == ("127.0.0.1", 18081, "ready", "up")
    assert slot.template_slot and not slot.free_slot
    assert slot.check_enabled and slot.check_result == "passed" and slot.check_status == "L7OK"
    assert slot.check_description == "Layer7 check passed"
    assert slot.healthy and slot.status == "UP"


def test_a_parked_slot_is_free():
    slot = records()["slot2"]
    assert slot.free_slot and slot.template_slot
    assert (slot.address, slot.admin_state, slot.operational_state) == ("0.0.0.0", "maint", "down")
    assert not slot.check_enabled and not slot.healthy


def test_a_draining_slot_reports_its_sessions_and_a_check_in_progress():
    slot = records()["slot3"]
    assert slot.admin_state == "drain" and slot.current_sessions == 2 and slot.queued == 1
    assert slot.check_status == "L7OK"  # HAProxy's "* " prefix (check running now) is dropped
    assert slot.healthy and not slot.free_slot


def test_servers_added_at_runtime_are_not_slots():
    servers = records(SHOW_SERVERS_STATE_API, SHOW_STAT_API, backend="api")
    failing, unchecked = servers["app-1"], servers["app-2"]
    assert not failing.template_slot and not failing.free_slot
    assert failing.admin_state == "drain" and failing.operational_state == "down" and not failing.healthy
    assert failing.check_result == "failed" and failing.check_status == "L4CON"
    assert failing.check_description == "Connection refused"
    assert failing.summary() == "127.0.0.1:18099, drain, down, check L4CON (Connection refused), 0 sessions"
    # No stat row (added between the two commands): sessions default to 0; no check: up is healthy.
    assert unchecked.current_sessions == 0 and unchecked.status == "" and not unchecked.check_enabled
    assert unchecked.healthy and unchecked.summary() == "10.0.0.7:8080, ready, up, check no check result, 0 sessions"


def test_rows_of_other_backends_are_ignored():
    assert haproxy.server_records("api", haproxy.parse_servers_state(SHOW_SERVERS_STATE),
                                  haproxy.parse_stat_csv(SHOW_STAT)) == []


@pytest.mark.parametrize("bits, state", [
    (0x00, "ready"), (0x04, "ready"), (0x40, "ready"),  # configured-disabled and FQDN bits alone: not maint
    (0x01, "maint"), (0x05, "maint"), (0x02, "maint"), (0x20, "maint"), (0x09, "maint"),  # maint wins over drain
    (0x08, "drain"), (0x0C, "drain"), (0x10, "drain"),
])
def test_admin_state_from_bits(bits, state):
    assert haproxy.admin_state_name(bits) == state


@pytest.mark.parametrize("address, expected", [
    ("/run/haproxy/admin.sock", ("unix", "/run/haproxy/admin.sock")),
    ("unix@/run/haproxy/admin.sock", ("unix", "/run/haproxy/admin.sock")),
    ("./admin.sock", ("unix", "./admin.sock")),
    ("127.0.0.1:9999", ("tcp", ("127.0.0.1", 9999))),
    ("lb.internal:9999", ("tcp", ("lb.internal", 9999))),
    ("[::1]:9999", ("tcp", ("::1", 9999))),
])
def test_runtime_api_addresses(address, expected):
    assert haproxy.parse_runtime_address(address) == expected


@pytest.mark.parametrize("address", ["admin.sock", "127.0.0.1", "127.0.0.1:", ":9999", "host:99999", "host:http"])
def test_runtime_api_address_that_is_neither_form(address):
    with pytest.raises(InfraError, match=r"neither a unix socket path .* nor host:port"):
        haproxy.parse_runtime_address(address)


@pytest.mark.parametrize("reply, accepted, success", [
    ("\n", (), True),
    ("", (), True),
    ("No such server.\n\n", (), False),
    ("New server registered.\n\n", (haproxy.ADDED_REPLY,), True),
    ("Already exists a server with the same name in backend.\n\n", (haproxy.ADDED_REPLY,), False),
    ("Server deleted.\n", (haproxy.DELETED_REPLY,), True),
    ("Only servers in maintenance mode can be deleted.\n", (haproxy.DELETED_REPLY,), False),
    ("IP changed from '0.0.0.0' to '127.0.0.1', port changed from '80' to '18081' by 'stats socket command'\n\n",
     haproxy.ADDRESS_CHANGED_REPLIES, True),
    ("\n", haproxy.ADDRESS_CHANGED_REPLIES, False),
])
def test_reply_is_success(reply, accepted, success):
    assert haproxy.reply_is_success(reply, accepted) is success


@pytest.mark.parametrize("name", ["web", "app-1", "web_v2.blue", "slot:1"])
def test_valid_names(name):
    assert haproxy.validate_name("server", name) == name


@pytest.mark.parametrize("name", ["", "a b", "web;shutdown sessions server web/a", "web/slot1", "web\nshow info"])
def test_names_that_could_break_a_command_are_refused(name):
    with pytest.raises(InfraError, match="not a valid HAProxy name"):
        haproxy.validate_name("backend", name)


def test_endpoints():
    assert haproxy.validate_endpoint("10.0.0.7", 8080) == ("10.0.0.7", 8080)
    assert haproxy.validate_endpoint("fd00::0007", 80) == ("fd00::7", 80)
    assert haproxy.endpoint_text("fd00::7", 80) == "[fd00::7]:80"
    assert haproxy.endpoint_text("10.0.0.7", 80) == "10.0.0.7:80"
    with pytest.raises(InfraError, match="not an IP address"):
        haproxy.validate_endpoint("web-1.internal", 80)
    for port in (0, 65536, "80", True):
        with pytest.raises(InfraError, match="not a TCP port number"):
            haproxy.validate_endpoint("10.0.0.7", port)


def test_states():
    haproxy.validate_state("drain")
    with pytest.raises(InfraError, match="'disabled' is not one of ready, drain, maint"):
        haproxy.validate_state("disabled")


@pytest.mark.parametrize("error, reason", [
    (FileNotFoundError(2, "No such file or directory"), "no such socket file"),
    (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
    (PermissionError(13, "Permission denied"), "permission denied"),
    (TimeoutError("timed out"), "no answer within 2.5s"),
    (OSError(113, "No route to host"), "No route to host"),
])
def test_failure_reasons(error, reason):
    assert haproxy.failure_reason(error, 2.5) == reason
