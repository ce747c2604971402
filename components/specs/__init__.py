"""Typed configs parsed from the YAML files in data_specs/."""
