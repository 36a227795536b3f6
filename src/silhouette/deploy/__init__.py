"""silhouette.deploy: the edge-to-cloud split (obfuscate on the camera, detect in the cloud)."""
