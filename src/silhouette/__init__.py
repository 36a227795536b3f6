"""silhouette: privacy-preserving person detection with a learned on-camera obfuscator."""

__version__ = "0.1.0"
