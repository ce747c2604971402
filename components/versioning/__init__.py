"""Dataset versions with DVC: one `dvc.yaml` stage per dataset, shards pushed to a DVC remote."""
