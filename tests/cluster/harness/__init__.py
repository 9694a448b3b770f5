"""Test harness: a real Kubernetes control plane and a node agent, built and run locally."""
