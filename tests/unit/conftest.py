"""The unit tier: pure logic, no PostgreSQL and no Kafka, seconds in total.

Asking for a service here fails the test loudly instead of finding one: `services` (and so
`fresh_db`, `topic_prefix`, `bootstrap`, `settings`, ...) is refused, and `FINPASS_DATABASE_URL`
/ `FINPASS_KAFKA_BOOTSTRAP_SERVERS` point at a port nothing listens on, so `Settings()` cannot
reach the local stack by accident either.
"""

from __future__ import annotations

import pytest

from tests.support.services import Services

NO_DATABASE = "postgresql://nobody@127.0.0.1:1/none"
NO_BROKER = "127.0.0.1:1"


@pytest.fixture(scope="session")
def services() -> Services:
    pytest.fail("unit tests must not use services (PostgreSQL, Kafka): a test that needs them "
                "belongs in tests/integration", pytrace=False)


@pytest.fixture(autouse=True)
def _no_services_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINPASS_DATABASE_URL", NO_DATABASE)
    monkeypatch.setenv("FINPASS_KAFKA_BOOTSTRAP_SERVERS", NO_BROKER)
