"""Cogwork: label -> tune -> train -> evaluate as Kubernetes custom resources."""
