"""Training-side steps that read ingested datasets (tokenizer today; the stage runner comes next)."""
