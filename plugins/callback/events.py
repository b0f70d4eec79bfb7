# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: events
type: stdout
short_description: One JSON object per line for each task start, task result and the final stats
description:
  - A machine-readable stdout callback. M(immutable.infra.bake) and M(immutable.infra.verify) run
    roles in a builder or throwaway host through a child C(ansible-playbook) with this callback, so they
    can show progress while the play runs and report the failing task with its message and output.
  - Each line is a JSON object with an C(event) key (C(task_start), C(result), C(stats)); with
    E(IMMUTABLE_INFRA_EMIT_FACTS=1) also one C(facts) event with the facts the play gathered first.
  - Results of tasks with C(no_log) are reduced to their status.
author:
  - immutable.infra contributors (@immutable-infra)
"""

import json
import os
import sys

from ansible.plugins.callback import CallbackBase

OUTPUT_LIMIT = 4000
GATHER_ACTIONS = ("gather_facts", "ansible.builtin.gather_facts", "setup", "ansible.builtin.setup")
RESULT_FIELDS = ("msg", "stdout", "stderr", "rc", "module_stdout", "module_stderr", "exception")


def _tail(value):
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[-OUTPUT_LIMIT:]


def _task_result(result):
    data = getattr(result, "result", None)
    return data if data is not None else result._result


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "immutable.infra.events"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Set by the bake when it keeps the builder's facts for the next bake from the same base.
        self._emit_facts = os.environ.get("IMMUTABLE_INFRA_EMIT_FACTS") == "1"

    def _emit(self, event, **fields):
        sys.stdout.write(json.dumps(dict(event=event, **fields), default=str) + "\n")
        sys.stdout.flush()

    def _task_fields(self, task):
        role = task._role.get_name() if task._role else None
        return {"task": task.get_name(), "role": role, "action": task.action}

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._emit("task_start", handler=False, **self._task_fields(task))

    def v2_playbook_on_handler_task_start(self, task):
        self._emit("task_start", handler=True, **self._task_fields(task))

    def _emit_result(self, result, status, ignore_errors=False):
        data = _task_result(result)
        fields = self._task_fields(result._task)
        fields.update(host=result._host.get_name(), status=status, ignore_errors=ignore_errors,
                      changed=bool(data.get("changed")))
        if data.get("_ansible_no_log") or data.get("censored"):
            fields["censored"] = True
        else:
            for key in RESULT_FIELDS:
                if data.get(key) not in (None, ""):
                    fields[key] = _tail(data[key])
            failed_items = [item for item in data.get("results") or []
                            if isinstance(item, dict) and item.get("failed")]
            if failed_items and "msg" not in fields:
                fields["msg"] = _tail(failed_items[0].get("msg", ""))
            if data.get("warnings"):
                fields["warnings"] = [str(warning) for warning in data["warnings"]]
        self._emit("result", **fields)
        if (status == "ok" and self._emit_facts and result._task.action in GATHER_ACTIONS
                and isinstance(data.get("ansible_facts"), dict)):
            self._emit_facts = False  # the play's own gathering comes first; later setup calls are the role's
            self._emit("facts", facts=data["ansible_facts"])

    def v2_runner_on_ok(self, result):
        self._emit_result(result, "changed" if _task_result(result).get("changed") else "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._emit_result(result, "failed", ignore_errors=ignore_errors)

    def v2_runner_on_skipped(self, result):
        self._emit_result(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._emit_result(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        hosts = {host: stats.summarize(host) for host in sorted(stats.processed)}
        self._emit("stats", hosts=hosts)
