"""Sources of AgentRuntimes (file, Kubernetes informer) feeding one AgentRuntimeIndex."""
