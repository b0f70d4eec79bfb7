# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The bake: resolve roles, hash the inputs, reuse a matching image or build and commit a new one."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from dataclasses import replace
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.attest.dsse import signers
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.keys import short_key_id
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.sbom import Contents
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.signing import (
    SIGNING_OPTIONS,
    BakeFacts,
    attest_bake,
    read_contents,
    signing_key_from,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.store import (
    read_image_attestations,
    record_summary,
    store_image_attestations,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.bake import builder, facts_cache
from ansible_collections.immutable.infra.plugins.plugin_utils.bake import plan as bake_plan
from ansible_collections.immutable.infra.plugins.plugin_utils.bake.play_runner import PlaySpec, run_play
from ansible_collections.immutable.infra.plugins.plugin_utils.bake.roles import CollectionIndex, Role, RoleResolver
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, short_id, utc_timestamp
from ansible_collections.immutable.infra.plugins.plugin_utils.core.interrupts import interruptible
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import (
    LABEL_INPUTS_HASH,
    LABEL_NAME,
    builder_name,
    failed_bake_labels,
    failed_bake_tag,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.core.provenance import controller_identity, git_info
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.task.contract import Manager, TaskContext

OWN_COLLECTION = "immutable.infra"
MAX_TIMEOUT = 7 * 86400
CONNECTION_COLLECTION = "community.docker"

BAKE_ARGUMENT_SPEC: dict[str, Any] = {
    "name": {"type": "str", "required": True},
    "base": {"type": "str", "required": True},
    "roles": {"type": "list", "elements": "str", "required": True},
    "vars": {"type": "dict", "default": {}},
    "config": {
        "type": "dict",
        "default": {},
        "options": {
            "cmd": {"type": "list", "elements": "str"},
            "entrypoint": {"type": "list", "elements": "str"},
            "env": {"type": "dict"},
            "exposed_ports": {"type": "list", "elements": "str"},
            "workdir": {"type": "str"},
            "user": {"type": "str"},
            "labels": {"type": "dict"},
            "volumes": {"type": "list", "elements": "str"},
            "stop_signal": {"type": "str"},
            "healthcheck": {
                "type": "dict",
                "options": {
                    "test": {"type": "raw", "required": True},
                    "interval": {"type": "raw"},
                    "timeout": {"type": "raw"},
                    "start_period": {"type": "raw"},
                    "retries": {"type": "int"},
                },
            },
        },
    },
    "force": {"type": "bool", "default": False},
    "keep_failed": {"type": "bool", "default": False},
    "pull": {"type": "bool", "default": False},
    "cleanup_paths": {"type": "list", "elements": "str", "default": builder.DEFAULT_CLEANUP_PATHS},
    "gather_subset": {"type": "list", "elements": "str", "default": ["all"]},
    "tags": {"type": "list", "elements": "str", "default": []},
    "skip_tags": {"type": "list", "elements": "str", "default": []},
    "privileged": {"type": "bool", "default": False},
    "python_interpreter": {"type": "str", "default": "/usr/bin/python3"},
    "become_method": {"type": "str", "default": "su"},
    "network": {"type": "str"},
    "bake_timeout": {"type": "int", "default": 3600},
    "project_dir": {"type": "path"},
    **SIGNING_OPTIONS,
}


class Baker(Manager):
    def __init__(self, params: dict[str, Any], context: TaskContext) -> None:
        # project_dir stands in for the playbook's directory: roles, provenance and ledger records come from it.
        super().__init__(params, replace(context, basedir=params["project_dir"]) if params["project_dir"] else context)
        self.name = bake_plan.validate_repository(params["name"])
        self.config = bake_plan.normalize_config(params["config"] or {})
        for path in params["cleanup_paths"]:
            if not path.startswith("/") or ".." in path.split("/"):
                raise InfraError(f"cleanup_paths entry '{path}' must be an absolute path without '..'.")
        if not 0 < params["bake_timeout"] <= MAX_TIMEOUT:
            raise InfraError(f"bake_timeout must be a positive number of seconds, at most {MAX_TIMEOUT} (a week).")
        if not params["roles"]:
            raise InfraError("roles is empty; list at least one role to bake.")
        if not os.path.isdir(self.context.basedir):
            raise InfraError(f"The project directory {self.context.basedir} (project_dir) does not exist.")
        self.collections = CollectionIndex(context.collections_path)
        # Roles resolve from project_dir when it is given, as they would for a playbook there.
        self.resolver = RoleResolver(self.context.basedir, context.roles_path, self.collections,
                                     context.play_collections)
        self.absent_units: list[str] = []  # services the roles started that the image does not have
        began = time.monotonic()
        self.signer = signing_key_from(params, self.context.basedir)  # a bad key is refused before anything runs
        # what signing took: opening the key, listing the packages, making and storing the statements
        self.attest_seconds = time.monotonic() - began
        self.contents: Contents | None = None  # what the builder holds, for the SBOM (with signing_key only)

    # observe -------------------------------------------------------------------------------------
    def _base_image(self, client: DockerClient) -> dict[str, Any] | None:
        """The base image's inspect data, pulled first when it is missing; None in check mode then."""
        image = client.image(self.params["base"])
        if image is None:
            if not self.params["pull"]:
                raise InfraError(f"Base image '{self.params['base']}' is not in the local Docker engine; "
                                 "build or load it first, or set pull: true to pull it from its registry.")
            if self.context.check_mode:
                return None
            self.progress(f"pulling base image {self.params['base']}")
            image = client.pull(self.params["base"])
        return image

    def _inputs(self, base_image: dict[str, Any], roles: list[Role]) -> dict[str, Any]:
        builder_options = {key: self.params[key] for key in
                           ("cleanup_paths", "gather_subset", "python_interpreter", "become_method")}
        # Added only when set, so images baked before these options existed keep their inputs hash.
        builder_options.update({key: self.params[key] for key in ("tags", "skip_tags", "privileged")
                                if self.params[key]})
        return bake_plan.build_inputs(base_image["Id"], [{"name": role.name, "digest": role.digest} for role in roles],
                                      self.params["vars"], self.config,
                                      tool_versions(self.collections, self.context.ansible_core_version, roles),
                                      builder_options)

    # run -----------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        client = self.client()
        base_image = self._base_image(client)
        requested, roles = self.resolver.resolve(self.params["roles"])
        if base_image is None:  # check mode: without the base, nothing can be hashed or found in the cache
            return would_pull(self.params["base"], self.name, roles, started)
        inputs = self._inputs(base_image, roles)
        digest = bake_plan.inputs_hash(inputs)
        tag = bake_plan.image_tag(digest)
        result: dict[str, Any] = {"inputs_hash": digest, "image": f"{self.name}:{tag}",
                                  "roles": [role.label for role in roles], "base_image_id": base_image["Id"]}
        if self.resolver.warnings:
            result["warnings"] = list(self.resolver.warnings)

        cached = self._cached_image(client, digest)
        if cached and not self.params["force"]:
            retag = f"{self.name}:{tag}" not in (cached.get("RepoTags") or [])
            if retag and not self.context.check_mode:
                client.tag(cached["Id"], self.name, tag)
            unsigned = self._unsigned_warning(client, cached["Id"], tag)
            if unsigned:
                result["warnings"] = [*result.get("warnings", []), unsigned]
            return dict(result, changed=retag, cache_hit=True, image_id=cached["Id"],
                        labels=cached["Config"].get("Labels") or {}, duration=round(time.monotonic() - started, 3),
                        msg=f"{self.name}:{tag} is up to date (inputs hash {tag})")

        reasons = self._reasons(client, inputs, cached)
        if self.context.check_mode:
            return dict(result, changed=True, cache_hit=False, image_id=None, labels={}, would_bake=True,
                        reasons=reasons, duration=round(time.monotonic() - started, 3),
                        msg=f"would bake {self.name}:{tag}: {'; '.join(reasons)}")

        return self._bake(client, base_image, requested, roles, inputs, result, reasons, started)

    def _bake(self, client: DockerClient, base_image: dict[str, Any], requested: list[Role], roles: list[Role],
              inputs: dict[str, Any], result: dict[str, Any], reasons: list[str], started: float) -> dict[str, Any]:
        digest = result["inputs_hash"]
        tag = bake_plan.image_tag(digest)
        self.progress(f"baking {self.name}:{tag} from {self.params['base']} ({'; '.join(reasons)})")
        labels = bake_plan.provenance_labels(
            name=self.name, base=self.params["base"], inputs=inputs, digest=digest,
            roles=[role.label for role in roles], created=utc_timestamp(),
            git=git_info(self.context.basedir), baked_by=controller_identity())
        ledger = self.ledger()
        record = ledger.new_record("bake", self.context.basedir, name=self.name, image=result["image"],
                                   inputs_hash=digest, roles=result["roles"], base_image_id=base_image["Id"])
        image_id = None
        try:
            image_id, play = self._build(client, base_image, requested, digest, labels)
            attested = self._attest(client, image_id, inputs, roles, record)
        except InfraError as error:
            if image_id:  # committed, but not signed as asked: a later bake must not find it as its cache
                with contextlib.suppress(InfraError):
                    client.remove_image(f"{self.name}:{tag}")
            ledger.append(dict(record, result="failed", image_id=None, error=error.message,
                               duration=round(time.monotonic() - started, 3)))
            raise
        duration = round(time.monotonic() - started, 3)
        if self.absent_units:
            result["warnings"] = [*result.get("warnings", []), builder.absent_units_warning(self.absent_units)]
        ledger.append(dict(record, result="succeeded", image_id=image_id, duration=duration, **attested))
        image = client.image(image_id) or {}
        return dict(result, changed=True, cache_hit=False, image_id=image_id, reasons=reasons, **attested,
                    labels=(image.get("Config") or {}).get("Labels") or labels,
                    changed_tasks=play.changed_tasks, warnings_from_roles=play.warnings, duration=duration,
                    ledger=ledger.path, msg=f"baked {self.name}:{tag} ({short_id(image_id)}) in {duration:.1f} s")

    def _attest(self, client: DockerClient, image_id: str, inputs: dict[str, Any], roles: list[Role],
                record: dict[str, Any]) -> dict[str, Any]:
        """With signing_key: the image's signed provenance and SBOM, kept beside it on the engine."""
        if self.signer is None or self.contents is None:
            return {}
        began = time.monotonic()
        facts = BakeFacts(name=self.name, tag=bake_plan.image_tag(record["inputs_hash"]), base=self.params["base"],
                          requested=list(self.params["roles"]), roles=roles, inputs=inputs,
                          inputs_hash=record["inputs_hash"], git=git_info(self.context.basedir),
                          controller=controller_identity(), invocation=record["id"], started=record["time"],
                          contents=self.contents)
        found = attest_bake(self.signer, image_id, facts)
        store_image_attestations(client, image_id, found)
        self.attest_seconds += time.monotonic() - began
        self.progress(f"bake {self.name}: provenance and SBOM signed by key {short_key_id(self.signer.keyid)}")
        return {"attestations": record_summary(found), "signed_by": self.signer.keyid,
                "attest_duration": round(self.attest_seconds, 3)}

    def _unsigned_warning(self, client: DockerClient, image_id: str, tag: str) -> str | None:
        """With signing_key, a reused image that has no provenance signed by that key is named: it was baked
        before the key was given, and the trust gate would refuse it."""
        if self.signer is None:
            return None
        provenance = read_image_attestations(client, image_id).envelopes.get("provenance")
        if provenance is not None and signers(provenance, [self.signer.public]):
            return None
        return (f"{self.name}:{tag} was reused from an earlier bake that signing_key did not sign, so it has no "
                "provenance or SBOM signed by that key; bake it again with force: true to sign it.")

    def _cached_image(self, client: DockerClient, digest: str) -> dict[str, Any] | None:
        images = client.images_with_label(LABEL_INPUTS_HASH, digest)
        tagged = [image for image in images if any(tag.startswith(self.name + ":") for tag in image.get("RepoTags") or [])]
        return next(iter(tagged or images), None)

    def _reasons(self, client: DockerClient, inputs: dict[str, Any], cached: dict[str, Any] | None) -> list[str]:
        if cached:
            return ["force: true"]
        newest = next(iter(client.images_with_label(LABEL_NAME, self.name, limit=1)), None)
        if newest is None:
            return [f"no image of {self.name} exists yet"]
        differences = bake_plan.explain_differences(bake_plan.inputs_summary(inputs),
                                                    bake_plan.recorded_inputs(newest))
        return [f"no image has this inputs hash; against {short_id(newest['Id'])}: " + ", ".join(differences)]

    def _build(self, client: DockerClient, base_image: dict[str, Any], requested: list[Role], digest: str,
               labels: dict[str, str]):
        tag = bake_plan.image_tag(digest)
        container_name = builder_name(tag, uuid.uuid4().hex[:6], time.time() + self.params["bake_timeout"])
        with interruptible(f"bake of {self.name}") as guard:
            container_id = client.run_detached(base_image["Id"], container_name, {},
                                               entrypoint=builder.KEEP_ALIVE, command=[],
                                               networks=[self.params["network"]] if self.params["network"] else None,
                                               **({"privileged": True} if self.params["privileged"] else {}))
            try:
                built = self._run_roles_and_commit(client, container_id, base_image, requested, digest, labels)
            except BaseException:
                with guard.shield(), contextlib.suppress(InfraError):  # the bake's own error is the one to tell
                    client.remove_container(container_id)
                raise
            with guard.shield():
                client.remove_container(container_id)
            return built

    def _run_roles_and_commit(self, client: DockerClient, container_id: str, base_image: dict[str, Any],
                              requested: list[Role], digest: str, labels: dict[str, str]):
        tag = bake_plan.image_tag(digest)
        builder.prepare(client, container_id, self.params["python_interpreter"])
        spec = self._play_spec(client, container_id, requested)
        key = self._facts_key(client, base_image) if facts_cache.applies(self.params["gather_subset"]) else None
        spec.cached_facts = facts_cache.load(key) if key else None
        spec.capture_facts = bool(key) and spec.cached_facts is None
        play = run_play(spec, self._show_event)
        if key and play.facts:
            facts_cache.save(key, play.facts)
        if not play.succeeded:
            kept = self._keep_failed(client, container_id, base_image, digest)
            raise InfraError(f"Bake of {self.name} failed: {play.failure_message()}"
                             + builder.host_level_hint(play.failure, self.params["privileged"])
                             + (f"\nThe builder was kept as image {kept} for debugging." if kept else ""),
                             failed_task=(play.failure or {}).get("task"), kept_image=kept)
        self.progress(f"committing {self.name}:{tag}")
        self.absent_units = builder.finish(client, container_id, self.params["cleanup_paths"])
        if self.signer is not None:
            began = time.monotonic()
            self.contents = read_contents(client, container_id)
            self.attest_seconds += time.monotonic() - began
        config = bake_plan.commit_config(base_image.get("Config") or {}, self.config, labels)
        image_id = client.commit(container_id, self.name, tag, config,
                                 message=f"immutable.infra bake, inputs hash {digest}")
        return image_id, play

    def _facts_key(self, client: DockerClient, base_image: dict[str, Any]) -> str:
        """What decides the facts a builder gathers: its image, the engine's machine, the builder's settings."""
        engine = client.api.info()
        return facts_cache.cache_key({
            "base_image_id": base_image["Id"], "engine_id": engine.get("ID"), "docker_host": client.where,
            "engine_version": engine.get("ServerVersion"), "privileged": self.params["privileged"],
            "network": self.params["network"], "python_interpreter": self.params["python_interpreter"],
            "ansible_core": self.context.ansible_core_version, "gather_subset": self.params["gather_subset"]})

    def _keep_failed(self, client: DockerClient, container_id: str, base_image: dict[str, Any], digest: str) -> str | None:
        if not self.params["keep_failed"]:
            return None
        tag = failed_bake_tag(bake_plan.image_tag(digest))
        config = bake_plan.commit_config(base_image.get("Config") or {}, {}, failed_bake_labels(digest))
        client.commit(container_id, self.name, tag, config, message="failed immutable.infra bake, kept for debugging")
        return f"{self.name}:{tag}"

    def _play_spec(self, client: DockerClient, container_id: str, requested: list[Role]) -> PlaySpec:
        # The child resolves names through the same search path, so it runs exactly the files hashed.
        return PlaySpec(
            container_id=container_id, host_name="builder",
            roles=[role.path if role.given_as_path else role.name for role in requested],
            variables=self.params["vars"], roles_path=self.resolver.search_dirs,
            collections_path=self.collections.paths, python_interpreter=self.params["python_interpreter"],
            become_method=self.params["become_method"], gather_subset=self.params["gather_subset"],
            tags=self.params["tags"], skip_tags=self.params["skip_tags"],
            engine=client, timeout=self.params["bake_timeout"])

    def _show_event(self, event: dict[str, Any]) -> None:
        if event["event"] == "task_start":
            kind = "handler" if event.get("handler") else "task"
            self.progress(f"bake {self.name}: {kind} {event.get('task')}")
        elif event["event"] == "result" and event.get("status") in ("failed", "unreachable"):
            self.progress(f"bake {self.name}: {event.get('status')}: {event.get('task')}: {event.get('msg', '')}"[:400])


def would_pull(base: str, name: str, roles: list[Role], started: float) -> dict[str, Any]:
    """Check mode's answer when the base image is not in the engine: a run pulls it, then bakes."""
    return {"changed": True, "cache_hit": False, "image_id": None, "labels": {}, "would_bake": True,
            "roles": [role.label for role in roles], "duration": round(time.monotonic() - started, 3),
            "reasons": [f"base image {base} is not in the engine yet: a run pulls it first"],
            "msg": f"would pull {base} and bake {name}"}


def tool_versions(collections: CollectionIndex, ansible_core: str, roles: list[Role]) -> dict[str, str]:
    """ansible-core's version and that of every collection the bake uses (this one, the connection's, the roles')."""
    versions = {"ansible-core": ansible_core}
    used = {OWN_COLLECTION, CONNECTION_COLLECTION}
    for role in roles:
        used.update(name for name in role.referenced_collections if name != "ansible.builtin")
        if role.collection:
            used.add(role.collection)
    for name in sorted(used):
        if collections.path(name):
            versions[name] = collections.version(name) or "unknown"
    return versions
