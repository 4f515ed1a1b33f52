"""Study data: manifests and their schemas, validation, splits, the preprocessing cache, datasets, the phantom
cohort and the builders of public releases."""
