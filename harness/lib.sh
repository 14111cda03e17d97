# shellcheck shell=bash
# Common environment for the harness scripts: sourced, never run.
set -euo pipefail

CELERY_STACK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CELERY_STACK_ROOT
export CELERY_STACK_VENV="${CELERY_STACK_VENV:-$CELERY_STACK_ROOT/.venv}"
# Podman reads only the project's settings (runc, ulimits).
export CONTAINERS_CONF="$CELERY_STACK_ROOT/harness/containers.conf"
export ANSIBLE_CONFIG="$CELERY_STACK_ROOT/ansible.cfg"
export ANSIBLE_ROLES_PATH="$CELERY_STACK_ROOT/roles"
export PATH="$CELERY_STACK_VENV/bin:$PATH"
# Debian versions the images are built for; the first is the primary one.
CELERY_STACK_SUITES=(trixie bookworm forky)
# Debian testing: newest RabbitMQ (4.3 on Erlang 29); its images accept
# Release files past their Valid-Until date.
CELERY_STACK_TESTING_SUITES=(forky)
# Base images whose RabbitMQ the app tests run against (RabbitMQ 4.3, 4.0).
CELERY_STACK_APP_TEST_BROKERS=(forky trixie)
CELERY_STACK_IMAGE_PREFIX="localhost/celery-stack-base"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
