"""The cloud service: the detection API, its storage and the dashboard."""
