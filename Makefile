# immutable.infra: make demo | make test | make bench
# Every target sets up what it needs first (Python env, Docker engine, base image) and skips what is done.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        ?= .venv
PYTHON      := $(CURDIR)/$(VENV)/bin/python
BASE_IMAGE  ?= immutable-infra/base:bookworm
BUILD       := $(CURDIR)/.build
COLLECTIONS := $(BUILD)/collections

export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export IMMUTABLE_INFRA_BASE_IMAGE := $(BASE_IMAGE)
export ANSIBLE_NOCOLOR := 1

.PHONY: help setup venv engine engines engines-down base-image host-packages bench-packages collection demo test \
	test-matrix faults bench sanity lint clean \
	vm-packages libvirt setup-vm demo-vm test-vm bench-vm

help:
	@echo "make demo   bake, verify, ship and roll out the example service over three Docker engines"
	@echo "make test   unit, integration, Molecule, ansible-test sanity and ansible-lint"
	@echo "make test-matrix  sanity, unit tests and a Galaxy-install smoke test under ansible-core 2.17, 2.18 and 2.19"
	@echo "make faults the long fault suite: 20 simultaneous-controller pairs, 20 controller kills (docs/reliability.md)"
	@echo "make bench  benchmarks against the anchors (see bench/README.md)"
	@echo "make demo-vm  the example service as VMs: bake, build the disk, verify it by booting, roll out 2 VMs behind"
	@echo "              HAProxy under load through libvirt, roll out a second version, roll back"
	@echo "make test-vm  the VM tests: disks (build, boot, verdicts) and VM hosts (3 VMs, rollback, drift, faults)"
	@echo "make engines       start the multi-engine rig: 3 more engines over TLS and two registries on loopback (one with"
	@echo "                   auth), and an engine in a container reached over ssh://"
	@echo "make engines-down  stop them (scripts/engines.py and scripts/ssh_engine.py down --purge also remove their data)"

venv:
	@scripts/setup-venv $(VENV)

engine: venv
	@$(PYTHON) scripts/ensure_host.py engine

# Three more Docker engines (TLS on 127.0.0.1) and two registries, for the multi-engine tests and demo,
# and an engine in a container reached over ssh:// (its image is built from the base image with apt, about
# two minutes the first time). About a second when they are up already.
engines: venv engine base-image
	@$(PYTHON) scripts/engines.py up
	@$(PYTHON) scripts/ssh_engine.py up

engines-down: venv
	@$(PYTHON) scripts/engines.py down
	@$(PYTHON) scripts/ssh_engine.py down

base-image: engine
	@$(PYTHON) scripts/ensure_host.py base-image $(BASE_IMAGE)

# HAProxy is the balancer of the demo and the tests.
host-packages: venv
	@$(PYTHON) scripts/ensure_host.py packages haproxy

# The collection is used in place: a link makes this checkout importable as immutable.infra.
collection:
	@mkdir -p $(COLLECTIONS)/ansible_collections/immutable
	@ln -sfn $(CURDIR) $(COLLECTIONS)/ansible_collections/immutable/infra

setup: venv engine base-image host-packages collection

# VM disks (immutable.infra.disk) and booting them (verify with disk): Debian packages only.
vm-packages: venv
	@$(PYTHON) scripts/ensure_host.py packages qemu-system-x86_64=qemu-system-x86 qemu-img=qemu-utils \
		mke2fs=e2fsprogs mkfs.vfat=dosfstools mcopy=mtools syslinux=syslinux sfdisk=fdisk ssh=openssh-client \
		ssh-keygen=openssh-client

# VM hosts: libvirt's daemon, started here when none runs, and the pinned Python binding (requirements-vm.txt).
libvirt: venv vm-packages
	@$(PYTHON) scripts/ensure_host.py libvirt

setup-vm: setup vm-packages libvirt

demo-vm: setup-vm
	@$(PYTHON) -m ansible.cli.playbook -i examples/demo/vm.fleet.yml examples/demo/demo-vm.yml

# The second hypervisor of the VM tests is this machine's libvirtd reached over SSH: an sshd of the tests' own.
test-vm: setup-vm
	@$(PYTHON) scripts/ensure_host.py packages /usr/sbin/sshd=openssh-server
	@IMMUTABLE_INFRA_VM=long $(PYTHON) -m pytest tests/integration/test_disk.py tests/integration/test_vm_hosts.py

# Packer (Debian's) is the anchor the VM disk benchmark measures against.
bench-vm: setup-vm
	@$(PYTHON) scripts/ensure_host.py packages packer=packer
	@$(PYTHON) bench/disk.py
	@$(PYTHON) bench/run.py vm_rollout

demo: setup engines
	@$(PYTHON) -m ansible.cli.playbook examples/demo/demo.yml

# The rig starts in under a second once its package is installed, so make test brings it up. libvirt is for
# the short form of the VM host tests (2 VMs under TCG, about 3.5 minutes with the disk they build).
test: setup vm-packages libvirt engines
	@IMMUTABLE_INFRA_TEST_REQUIRE_ALL=1 $(PYTHON) -m pytest

# Every ansible-core version meta/runtime.yml admits (noxfile.py); long, so not part of make test.
test-matrix: setup engines
	@$(VENV)/bin/nox -f noxfile.py

# The short form of the fault suite runs in make test; this is the long one.
faults: setup engines
	@IMMUTABLE_INFRA_FAULTS=long $(PYTHON) -m pytest tests/integration/test_faults.py -s

# wrk drives the rollout benchmark's keep-alive load; docker-compose is one of its approaches.
bench-packages: venv
	@$(PYTHON) scripts/ensure_host.py packages wrk=wrk docker-compose=docker-compose

bench: setup bench-packages
	@$(PYTHON) bench/run.py

clean:
	rm -rf $(BUILD) tests/output .pytest_cache
