"""silhouette.training."""
