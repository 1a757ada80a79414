"""Pure core: no I/O, no web framework, no Kubernetes client.

Everything here works on plain dicts and pydantic models so that it can be tested table-driven and
reused by the HTTP service, the offline CLI and the tests alike.
"""
