"""Shared test set-up: real services (Redis, PostgreSQL) come from service_fixtures."""

pytest_plugins = ["service_fixtures", "gateway_fixtures"]
