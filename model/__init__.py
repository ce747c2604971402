"""The LongCat-Flash-Omni architecture on megatron-core, from CPU-trainable presets to the full config.

Imports no Airflow, KFP, MLflow or DVC: orchestration and tracking reach the model through callbacks.
"""
