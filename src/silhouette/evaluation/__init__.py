"""silhouette.evaluation."""
