"""How orchestrators (Airflow, KFP) run project steps. Stdlib only: imported inside the Airflow venv."""
