# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How many hosts a change may add and take away at once, and which hosts go together. Pure; no I/O.

max_surge and max_unavailable are a number of hosts (2) or a percentage of the service's hosts
("25%"). A percentage is taken of each engine's share of the new generation, a surge rounded up and
an unavailability rounded down per engine, then added up: 25% of 10 hosts on one engine is a surge of
3; over four engines holding 3, 3, 2 and 2 it is 4, one host per engine. So a service spread over
more engines replaces more hosts at once, each engine the same share of every batch, without numbers
written per fleet size.

Batches take their hosts from every engine in turn (in proportion to each engine's share), so that
every engine has work in every batch and a batch lasts as long as its slowest engine's share.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError

PERCENT = re.compile(r"^\s*([0-9]{1,3}(?:\.[0-9]+)?)\s*%\s*$")
COUNT = re.compile(r"^\s*([0-9]+)\s*$")

Amount = int | str  # a count, or a percentage such as "25%"


def check_amount(name: str, value: object) -> Amount:
    """The option as the planner takes it: a count from 0, or a percentage from 0% to 100%."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise InfraError(f"{name} cannot be negative (got {value}).")
        return value
    text = str(value) if isinstance(value, (str, float)) else ""
    counted = COUNT.match(text)
    if counted:
        return int(counted.group(1))
    share = PERCENT.match(text)
    if share and float(share.group(1)) <= 100:
        return f"{float(share.group(1)):g}%"
    raise InfraError(f"{name} must be a number of hosts (such as 2) or a percentage of the service's hosts from 0% "
                     f"to 100% (such as 25%); got {value!r}.")


def resolve(name: str, value: Amount, shares: Sequence[int], round_up: bool) -> int:
    """The number of hosts an amount allows: a count as it is; a percentage of each engine's share
    (shares: hosts per engine), rounded per engine (up for a surge, down for unavailability), added up."""
    amount = check_amount(name, value)
    if isinstance(amount, int):
        return amount
    fraction = float(amount[:-1]) / 100
    rounding = math.ceil if round_up else math.floor
    # Rounded to whole thousandths first, so that 30% of 10 is 3, not ceil(3.0000000000000004).
    return sum(int(rounding(round(fraction * share, 3))) for share in shares)


def shares_of(hosts: Sequence[str], engine_of: Mapping[str, str]) -> list[int]:
    """Hosts per engine (in order of first appearance); all on one engine when engine_of says nothing."""
    counts: dict[str, int] = {}
    for name in hosts:
        engine = engine_of.get(name, "")
        counts[engine] = counts.get(engine, 0) + 1
    return list(counts.values()) or [0]


def interleave(names: Sequence[str], engine_of: Mapping[str, str]) -> list[str]:
    """The names reordered so that every engine comes in turn, in proportion to its share, each engine's
    own hosts kept in their order: a, a, b, b -> a, b, a, b. One engine: the order is kept."""
    queues: dict[str, list[str]] = {}
    for name in names:
        queues.setdefault(engine_of.get(name, ""), []).append(name)
    if len(queues) < 2:
        return list(names)
    engines = list(queues)
    keyed = [((position + 0.5) / len(queue), engines.index(engine), name)
             for engine, queue in queues.items() for position, name in enumerate(queue)]
    return [name for _key, _engine, name in sorted(keyed)]
