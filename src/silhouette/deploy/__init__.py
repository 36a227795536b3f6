"""silhouette.deploy."""
