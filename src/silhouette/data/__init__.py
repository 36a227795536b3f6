"""silhouette.data."""
