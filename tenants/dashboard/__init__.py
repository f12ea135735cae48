"""The staff web UI: server-rendered pages with charts, over the REST API and the models."""
