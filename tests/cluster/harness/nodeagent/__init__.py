"""A fake kubelet for the local test cluster (see __main__.py)."""
