# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Carrying out plan steps on a service's hosts, through its back-end and its balancer.

Rollouts, rollbacks, reverts, reconciles and heals all apply the same steps (plan.py names them).
Each step goes to the engine its host runs on (or is placed on); each engine's share of a start is
carried out by its own workers (a few hosts at once per machine), so a batch over several engines takes as
long as its slowest engine's share, not the sum. The health gates of a step's hosts are polled together
(health.wait_all_healthy) and the balancer's side goes a batch at a time (swap.py). While a batch is
gated and swapped, the next batch's hosts are made ahead (made, not started: no capacity used), and
stops go out in the background once a host is drained and out of the balancer (stopping.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor

from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.base import Balancer
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.core.interrupts import never_interrupted
from ansible_collections.immutable.infra.plugins.plugin_utils.service import membership
from ansible_collections.immutable.infra.plugins.plugin_utils.service import plan as rp
from ansible_collections.immutable.infra.plugins.plugin_utils.service.backend import HostBackend, HostRecord
from ansible_collections.immutable.infra.plugins.plugin_utils.service.health import (
    HealthCheck,
    Target,
    run_for_each,
    wait_all_healthy,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.service.spec import HostSpec
from ansible_collections.immutable.infra.plugins.plugin_utils.service.stopping import Stops
from ansible_collections.immutable.infra.plugins.plugin_utils.service.store import ServiceStore
from ansible_collections.immutable.infra.plugins.plugin_utils.service.swap import SwapSteps

# Hosts one machine's engines start at once: an engine that is not busy answers several starts sooner than
# the same starts one after another (20 containers: 5.3 s one at a time, 3.4 s two at a time, 3.0 s four at
# a time), but engines that share one machine's cores crowd them with more (bench/README.md, Fleet).
STARTS_PER_MACHINE = 4


def raise_first(futures: list[Future]) -> None:
    """Raises the first of the futures' exceptions, in their order, if any."""
    for future in futures:
        if future.exception():
            raise future.exception()  # type: ignore[misc]


class HostSteps(SwapSteps):
    """Observes a service's hosts and balancer membership, and applies plan steps to them."""

    def __init__(self, backend: HostBackend, balancer: Balancer, spec: HostSpec, store: ServiceStore,
                 progress: Callable[[str], None], drain_timeout: float = 30, stop_timeout: int = 10) -> None:
        super().__init__()
        self.backend = backend
        self.balancer = balancer
        self.use_spec(spec)
        self.service = spec.service
        self.progress = progress
        self.drain_timeout = drain_timeout
        self.stop_timeout = stop_timeout
        self.placement: dict[str, str] = {}  # host to make -> its engine (the first engine otherwise)
        self.rollout_id = ""
        self.check_interrupted: Callable[[], None] = never_interrupted
        self.doing: rp.Step | None = None  # the step under way, for errors that stop the whole run
        self.before_stop: Callable[[list[str]], None] | None = None  # notes a stop before it is sent
        self.wait_allowance: Callable[[], float] | None = None  # how long a drain may still wait, if limited
        self._background = ThreadPoolExecutor(max_workers=16)
        self.stops = Stops(backend, store, stop_timeout, progress)
        self._creating: dict[str, Future] = {}
        self.unlisted: list[str] = []  # engines down when the run began, whose share went to the others

    def use_spec(self, spec: HostSpec) -> None:
        """Hosts made from now on are made from this spec (a heal replaces each host from its own)."""
        self.spec = spec
        self.health = HealthCheck.from_options(spec.health, spec.port)

    def close(self) -> None:
        self._finish_background_work()
        self._background.shutdown(wait=True)

    def where(self, name: str, records: Mapping[str, HostRecord] | None = None) -> str:
        """The engine of a host: where it runs (records), else where it is placed, else the first."""
        record = (records or {}).get(name)
        if record is not None:
            return record.engine
        return self.placement.get(name) or self.backend.engine_names[0]

    # membership ---------------------------------------------------------------------------------
    def observe(self) -> membership.Observation:
        return membership.observe(self.backend, self.balancer, self.stops.pending.read(), self.progress,
                                  self.unlisted)

    def detach_stale(self, observation: membership.Observation) -> None:
        membership.detach_stale(self.balancer, observation, self.service, self.progress)

    def ensure_membership(self, live: list[str], what: str) -> None:
        """After the steps: every server of the service is a live host at its current address (or a free
        slot), and every live host has a server taking traffic (membership.require_live)."""
        observation = self.observe()
        self.detach_stale(observation)
        membership.require_live(self.balancer, observation, live, f"the {what}", self.service)

    # apply --------------------------------------------------------------------------------------
    def apply(self, steps: list[rp.Step], records: dict[str, HostRecord], what: str,
              interrupted: Callable[[], None] = never_interrupted) -> None:
        """Carries out the steps in order; `what` names the work in progress lines. interrupted() is
        called before each step and health check, and raises to stop the steps there."""
        self.check_interrupted = interrupted
        try:
            self._create_ahead(steps)  # the first batch's hosts too: all made at once, each engine's in parallel
            for position, step in enumerate(steps):
                self.check_interrupted()
                if step.batch > 1 and steps[position - 1].batch != step.batch:
                    self._keep_serving(records)
                self.progress(f"{self.service} {what}: {self.describe(step, records)}")
                self.doing = step
                getattr(self, f"_step_{step.action}")(list(step.hosts), records, step)
                if step.action == rp.START:
                    self._create_ahead(steps[position + 1:])
        finally:
            self.check_interrupted = never_interrupted
            self._finish_background_work()

    def describe(self, step: rp.Step, records: Mapping[str, HostRecord] | None = None) -> str:
        """The step as progress lines say it: with each host's engine when there is more than one."""
        if not self.backend.several:
            return step.describe()
        return rp.Step(step.action, tuple(f"{name} on {self.where(name, records)}" for name in step.hosts),
                       step.batch, step.seconds).describe()

    def _create_ahead(self, steps: list[rp.Step]) -> None:
        """Makes (not starts) the next batch's hosts while this batch is gated and swapped: a made host
        uses no capacity, and the next batch then only has to start it."""
        upcoming = next((step for step in steps if step.action == rp.START), None)
        for name in upcoming.hosts if upcoming else ():
            self._creating[name] = self._background.submit(self._create, name)

    def _create(self, name: str) -> str:
        balancer = self.balancer.name if self.balancer.tracks_membership else None
        return self.backend.create(name, self.where(name), self.spec, self.rollout_id, balancer)

    def _per_engine(self, names: list[str], records: Mapping[str, HostRecord], action: Callable[[str], None]) -> None:
        """Runs action for every host: each engine's hosts by workers of that engine, all engines at once,
        and at most STARTS_PER_MACHINE at once over the engines of one machine (backend.machine_of). After a
        failure no worker begins another host; the first failure (in engine order) is raised once every
        worker has stopped."""
        shares: dict[str, list[str]] = {}
        for name in names:
            shares.setdefault(self.where(name, records), []).append(name)
        budgets: dict[str, threading.BoundedSemaphore] = {}  # machine -> its starts at once
        budget_of = {engine: budgets.setdefault(self.backend.machine_of(engine),
                                                threading.BoundedSemaphore(STARTS_PER_MACHINE))
                     for engine in shares}
        failed = threading.Event()

        def work(name: str, budget: threading.BoundedSemaphore) -> None:
            with budget:
                if failed.is_set():
                    return
                try:
                    self.check_interrupted()
                    action(name)
                except BaseException:
                    failed.set()
                    raise

        def share_of_engine(engine: str, share: list[str]) -> None:
            budget = budget_of[engine]
            if len(share) == 1:
                work(share[0], budget)
                return
            with ThreadPoolExecutor(max_workers=min(STARTS_PER_MACHINE, len(share))) as pool:
                futures = [pool.submit(work, name, budget) for name in share]
            raise_first(futures)
        if len(shares) == 1:
            share_of_engine(*next(iter(shares.items())))
            return
        with ThreadPoolExecutor(max_workers=len(shares)) as pool:
            raise_first([pool.submit(share_of_engine, engine, share) for engine, share in shares.items()])

    def _step_start(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        def start(name: str) -> None:
            creating = self._creating.pop(name, None)
            host_id = creating.result() if creating else self._create(name)
            records[name] = HostRecord(name, host_id, engine=self.where(name))
            try:
                self.backend.start(records[name])
            finally:
                self._refresh_endpoint(records[name])
        self._per_engine(names, records, start)

    def _step_start_stopped(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        finishing = [name for name in names if records[name].stopping or self.stops.under_way(name)]
        if finishing:
            # Out of the balancer and drained already, so the stop the engine is finishing loses nothing
            # if it ends now: killed, the host can be started again at once instead of after stop_timeout.
            self.progress(f"{self.service}: finishing the stop of {', '.join(finishing)} before starting it again")
            run_for_each(finishing, lambda name: self.stops.finish(records[name]))
        self.stops.forget(names)  # running again, these hosts are no longer stopping, whoever sent the stop

        def start(name: str) -> None:
            self.backend.start(records[name])
            records[name].stopping = False
            self._refresh_endpoint(records[name])
        self._per_engine(names, records, start)

    def _refresh_endpoint(self, record: HostRecord) -> None:
        record.address, record.port = self.backend.endpoint(record)

    def _step_wait_healthy(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        try:
            seconds = wait_all_healthy(self.health, [self._target(records[name]) for name in names], self.progress,
                                       on_first_pass=lambda passed: self._register_ahead(
                                           [records[target.name] for target in passed]),
                                       interrupted=self.check_interrupted)
        finally:
            self._finish_registrations(records)
        for name in names:
            self.progress(f"{self.service}: {name} is healthy after {seconds[name]:.1f} s ({self.health.describe()})")

    def _target(self, record: HostRecord) -> Target:
        return Target(record.name, record.address, record.port,
                      lambda command: self.backend.run_command(record, command),
                      lambda: self.backend.problem(record))

    def _step_observe(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        deadline = time.monotonic() + step.seconds
        while time.monotonic() < deadline:
            self.check_interrupted()
            for name in names:
                target = self._target(records[name])
                problem = target.problem()
                passed, seen = (False, problem) if problem else self.health.probe(target.run_command, target.address,
                                                                                  target.port)
                if not passed:
                    raise InfraError(f"canary {name} failed its {self.health.describe()} while observed: {seen}.",
                                     host=name)
            time.sleep(self.health.interval)

    def _step_stop(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        """The hosts are drained and out of the balancer, so nothing waits for them to exit: the stop is
        sent and, for a service that ignores SIGTERM, left to the engine, which kills the host after
        stop_timeout. They are recorded as stopping first, so any run meanwhile sees them as stopped;
        and in the journal (before_stop), so a recovery after this controller dies knows it too."""
        if self.before_stop:
            self.before_stop(names)
        self.stops.send([records[name] for name in names])

    def _step_remove(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        run_for_each([name for name in names if name in records], lambda name: self.backend.remove(records[name]))
        self.stops.forget(names)

    def _finish_background_work(self) -> None:
        """Collects the stops and creations still under way. A host made ahead for a batch that never ran
        stays as a made host of the new generation, which a revert removes like its other hosts."""
        self.stops.collect()
        for name, creating in self._creating.items():
            if creating.exception():
                self.progress(f"{self.service}: creating {name} ahead failed: {creating.exception()}")
        self._creating = {}
