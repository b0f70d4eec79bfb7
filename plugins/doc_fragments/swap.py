# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # How a change of a service's hosts drains, stops and locks (plugin_utils/service/options.py
    # SWAP_OPTIONS), shared by rollout, rollback and drift.
    DOCUMENTATION = r"""
options:
  drain_timeout:
    description:
      - Seconds to wait, after an old host is put in drain, for the balancer to report no sessions on
        it. When they do not reach zero in time the host is taken out anyway, with a warning.
      - From V(0) to V(86400).
    type: float
    default: 30
  stop_timeout:
    description:
      - Seconds an old host gets to exit after SIGTERM before the engine kills it (from V(0) to V(3600)).
      - Nothing waits for it. An old host is stopped only once it is drained and out of the balancer, so
        when it has not exited a second after SIGTERM (a program that ignores SIGTERM as PID 1), the
        engine is left to finish the stop. Such hosts are recorded as stopping (the result's C(stopping),
        the ledger, a record C(immutable-infra-stopping-<service>)), count as stopped for every later run,
        and a run that needs one back (a revert, a rollback) kills it first.
    type: int
    default: 10
  lock_timeout:
    description:
      - Length in seconds of the lock's lease (from V(1) to V(604800)). The run holding the lock renews it
        every O(lock_timeout)/6 seconds while it works; another controller takes the lock over only when
        it was not renewed for this long, or when the process that took it on the same controller is gone.
    type: int
    default: 60
"""
