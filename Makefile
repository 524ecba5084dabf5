# Entry points of the project. Every target calls a script or a single cargo command;
# the logic lives in scripts/ (run `make help`).

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

.PHONY: help setup start stop restart destroy status health logs logs-app logs-vault \
	vault-secrets vault-read-db vault-read-api vault-shell vault-status vault-init \
	build test lint format format-check ci-local

help: ## List the targets
	@printf 'Usage: make <target>\n\nTargets:\n'
	@awk 'BEGIN { FS = ":.*## " } /^[a-zA-Z0-9_-]+:.*## / { printf "  %-15s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)
	@printf '\nPorts: BAO_PORT (default 8200), APP_PORT (default 5000). State: .stack/\n'

setup: ## Install OpenBao, PostgreSQL binaries and the tools (idempotent)
	scripts/setup.sh

start: ## Start the local stack (OpenBao + app), bootstrap it; no-op when up
	scripts/stack.sh start

stop: ## Stop the app and OpenBao started by `make start`
	scripts/stack.sh stop

restart: ## Stop, then start the local stack
	scripts/stack.sh restart

destroy: ## Stop the stack and delete .stack/ (data, keys, tokens)
	scripts/stack.sh destroy

status: ## Show whether OpenBao and the app run, and the seal state
	scripts/stack.sh status

health: ## Query app /health, /ready and OpenBao sys/health
	scripts/stack.sh health

logs: ## Follow the app and OpenBao logs (LOGS_FOLLOW=0 to only print)
	scripts/stack.sh logs

logs-app: ## Follow the app log
	scripts/stack.sh logs-app

logs-vault: ## Follow the OpenBao server log
	scripts/stack.sh logs-vault

vault-secrets: ## List the app's secrets under secret/app/
	scripts/vault.sh kv list secret/app/

vault-read-db: ## Show secret/app/database
	scripts/vault.sh kv get secret/app/database

vault-read-api: ## Show secret/app/api
	scripts/vault.sh kv get secret/app/api

vault-shell: ## Open a shell with the OpenBao address, CA and admin token exported
	scripts/stack.sh vault-shell

vault-status: ## Show `bao status` of the local OpenBao
	scripts/stack.sh vault-status

vault-init: ## Re-run the idempotent OpenBao bootstrap
	scripts/stack.sh vault-init

build: ## Build the workspace in release mode
	cargo build --release --locked --workspace

test: ## Run all tests against a throw-away OpenBao (TEST_ARGS=... for nextest)
	scripts/test.sh $(TEST_ARGS)

lint: ## cargo clippy (warnings are errors) and shellcheck
	cargo clippy --workspace --all-targets -- -D warnings
	shellcheck scripts/*.sh .ci/run

format: ## Format the Rust code
	cargo fmt --all

format-check: ## Check the Rust formatting
	cargo fmt --all -- --check

ci-local: ## Run exactly what CI runs (.ci/run)
	.ci/run
