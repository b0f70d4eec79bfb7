"""Service names as users write them, host names read from the right, servers matched to hosts."""

from __future__ import annotations

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.base import Member
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.inventory import group_prefix
from ansible_collections.immutable.infra.plugins.plugin_utils.service import plan as rp
from ansible_collections.immutable.infra.plugins.plugin_utils.service.membership import match_servers
from ansible_collections.immutable.infra.plugins.plugin_utils.service.spec import validate_service


@pytest.mark.parametrize("name", ["web", "web-api", "bars_hello", "a", "api2", "web-2", "a" * 63, "x-1-2"])
def test_dns_labels_and_underscores_are_service_names(name):
    assert validate_service(name) == name


@pytest.mark.parametrize("name", ["", "Web", "2web", "-web", "web-", "web_", "web.api", "web api", "a" * 64,
                                  "../etc", "web/api", "web\x00", "web\n", "wéb", None, 3, ["web"]])
def test_other_names_are_refused_in_one_sentence(name):
    with pytest.raises(InfraError) as error:
        validate_service(name)
    message = error.value.message
    assert message.count(". ") == 0 and message.endswith(".") and "\n" not in message


@pytest.mark.parametrize("host, parsed", [("web-api-3-2", ("web-api", 3, 2)), ("web-1-1", ("web", 1, 1)),
                                          ("web-2-10-4", ("web-2", 10, 4)), ("bars_hello-12-1", ("bars_hello", 12, 1))])
def test_host_names_are_read_from_the_right(host, parsed):
    assert rp.parse_host_name(host) == parsed
    assert rp.host_name(*parsed) == host


def test_group_names_use_underscores_for_hyphens():
    assert group_prefix("web-api") == "web_api" and group_prefix("web_api") == "web_api" and group_prefix("web") == "web"


def server(name, address, port=8000, admin="ready"):
    return Member(name, address, port, admin)


def test_each_running_host_gets_the_server_at_its_address_and_the_rest_is_stale():
    endpoints = {"web-1-1": ("10.0.0.1", 8000), "web-1-2": ("10.0.0.2", 8000), "web-1-3": ("10.0.0.3", 8000)}
    servers = [server("slot1", "10.0.0.1"), server("slot2", "10.0.0.9"),  # nobody's address
               server("slot3", "10.0.0.2", admin="drain"), server("web-1-2", "10.0.0.2"),  # two at one address
               server("slot4", "10.0.0.3", port=9000)]  # right address, wrong port
    matched, stale = match_servers(endpoints, servers)
    assert {name: found.name for name, found in matched.items()} == {"web-1-1": "slot1", "web-1-2": "web-1-2"}
    assert stale == ["slot2", "slot3", "slot4"]


def test_a_server_named_after_an_old_host_belongs_to_whoever_has_its_address_now():
    matched, stale = match_servers({"web-2-1": ("10.0.0.7", 8000)}, [server("web-1-3", "10.0.0.7")])
    assert matched["web-2-1"].name == "web-1-3" and stale == []
