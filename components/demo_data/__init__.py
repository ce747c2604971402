"""A deterministic synthetic multimodal corpus with ground-truth labels (`omnistage demo-data`).

Made from ffmpeg lavfi sources, espeak-ng speech and PIL drawings, so it needs no download; later stages
train and evaluate on it. Train and eval items come from disjoint parameter partitions (see
`corpus.in_partition`), so an eval question never appears in training.
"""
