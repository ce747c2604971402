"""Kubeflow Pipelines: components that call the library, and the curriculum pipeline built from them."""
