"""silhouette.detectors."""
