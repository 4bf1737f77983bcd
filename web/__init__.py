"""The HTTP face of the appliance: the caesar-rest compatible API, docs and static files."""
