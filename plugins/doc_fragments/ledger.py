# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  ledger:
    description:
      - Path of the ledger, the append-only JSON Lines record of bakes, verdicts and rollouts.
      - When not set, the E(IMMUTABLE_INFRA_LEDGER) environment variable of the controller names it,
        else C(~/.local/share/immutable-infra/ledger.jsonl).
      - Point every controller of a team at the same file on shared storage (NFS and other file
        systems with POSIX record locks) so the history is complete; appends are locked and atomic.
    type: path
"""
