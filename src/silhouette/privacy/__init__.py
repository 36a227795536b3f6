"""silhouette.privacy."""
