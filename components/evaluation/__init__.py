"""Held-out evaluation: eval suites scored with bootstrap CIs, the contamination check, reports."""
