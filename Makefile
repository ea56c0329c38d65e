# Two commands for a newcomer on a fresh Debian 12 machine (as root):
#   make lab    provision the built-in lab and deploy the sample service
#   make test   run every test suite
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ROOT   := $(CURDIR)
VENV   := $(ROOT)/.venv
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(ROOT)/ansible.cfg
PYTEST := $(VENV)/bin/pytest

.PHONY: help bootstrap test lint unit agent-test monitoring-test integration molecule e2e bench \
        lab lab-up lab-break lab-down lab-notifications render collection clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

bootstrap: ## install apt packages, the venv and the systemd host image (idempotent)
	@$(ROOT)/scripts/bootstrap

# The light tiers run on two workers (much of their time is spent waiting on gunicorn, alembic,
# Alertmanager); molecule and the lab run after them, one at a time. Both parts always run and
# print their slowest tests (where the time of a CI run goes).
test: bootstrap ## run every test suite (lint, agent, monitoring, integration, molecule, e2e)
	rc=0; $(PYTEST) -n 2 -m "not bench and not molecule and not e2e" --durations=15 || rc=$$?; \
	  $(PYTEST) -m "molecule or e2e" --durations=25 || rc=$$?; exit $$rc

lint: bootstrap ## ruff, yamllint, ansible-lint and playbook syntax checks
	$(PYTEST) -m lint

agent-test: bootstrap ## the rollback agent's tests
	$(PYTEST) -m "unit or agent"

monitoring-test: bootstrap ## promtool/amtool tests of the monitoring content
	$(PYTEST) -m monitoring

integration: bootstrap ## several real components together on loopback
	$(PYTEST) -m integration

molecule: bootstrap ## one molecule scenario per role (slow)
	$(PYTEST) -m molecule

e2e: bootstrap ## the lab end to end (slowest)
	$(PYTEST) -m e2e

bench: bootstrap ## every benchmark of the project; prints figures
	$(PYTEST) -m bench -s -p no:randomly --override-ini="addopts=-ra -p no:cacheprovider -p testkit.plugin"

lab: bootstrap ## boot the lab, provision it with site.yml and deploy the sample service
	@$(ROOT)/scripts/lab up

lab-break: ## deploy the bad release on the lab and follow the automated rollback (SCENARIO=bad-release, slow-release, not-the-cause, canary-fails)
	@$(ROOT)/scripts/lab break

lab-notifications: ## list the Slack/PagerDuty/email messages the lab captured
	@$(ROOT)/scripts/lab notifications

lab-down: ## remove everything the lab created
	@$(ROOT)/scripts/lab down

render: bootstrap ## render every generated config of the production inventory into ./render (and agent/examples/)
	ansible-playbook -i inventories/production playbooks/render.yml -e render_dir=$(ROOT)/render \
	  -e render_examples_dir=$(ROOT)/agent/examples

collection: bootstrap ## build the roles as the Ansible collection sre_monitoring.stack into ./dist (galaxy.yml)
	ansible-galaxy collection build --force --output-path $(ROOT)/dist $(ROOT)

clean: ## remove caches (not the venv or the image)
	rm -rf .cache/facts .pytest_cache .ruff_cache render
