"""Text options: control characters are refused, except the line breaks of PEM text (keys)."""

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.core.options import check_text

SPEC = {"name": {"type": "str"}, "signing_key": {"type": "str", "no_log": True},
        "trust": {"type": "dict", "options": {"keys": {"type": "list", "elements": "str"}}}}
PEM = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\r\n-----END PUBLIC KEY-----\n"


def test_pem_text_keeps_its_line_breaks_in_an_option_and_in_a_suboption_list():
    check_text({"signing_key": PEM, "trust": {"keys": [PEM, "keys/release.pub"]}}, SPEC)


@pytest.mark.parametrize("params, option", [
    ({"name": "web\nserver"}, "name"),
    ({"signing_key": PEM.replace("MFkw", "MF\x00kw")}, "signing_key"),
    ({"trust": {"keys": ["keys/\x1brelease.pub"]}}, "trust.keys"),
])
def test_other_control_characters_are_refused_naming_the_option(params, option):
    with pytest.raises(InfraError, match=f"Option {option} holds the control character"):
        check_text(params, SPEC)
