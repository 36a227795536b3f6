"""silhouette.models."""
