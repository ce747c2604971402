"""Promotion: the declarative gate (pure), and the MLflow registry moves it allows (aliases, tags, decisions)."""
