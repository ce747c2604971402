"""MLflow tracking and lineage for curriculum runs. The trainer never imports MLflow: it calls back."""
