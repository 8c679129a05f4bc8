"""What the test tiers share: event builders, services, pipeline helpers, streams.

Nothing here talks to a service when imported.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The repository's root (this package is `tests/support/`)."""
