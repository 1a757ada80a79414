"""Test-session defaults.

The registry resolver runs by default with the Kubernetes source, and the sample AgentRuntimes name
public registries that these machines must not contact: every test (and every `serve` it starts,
which inherits the environment) runs with the resolver off unless it asks for it with its own flags.
"""

import os

os.environ.setdefault("SKILL_WEBHOOK_RESOLVE_INTERVAL", "0")
