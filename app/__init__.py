"""skill-webhook: admission webhooks that mount AI-agent skills (OCI images) into agent pods."""
