"""Ingestion: raw media files -> validated, 1-second-interleaved WebDataset shards.

The steps are separate modules so that the CLI, the Airflow DAG and the tests call the same functions:
discover -> probe -> validate (Great Expectations) -> plan shards -> decode + write shards -> report.
`components.ingest.pipeline.ingest_dataset` runs them all.
"""
