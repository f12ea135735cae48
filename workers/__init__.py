"""GPU workers: Celery workers hosting vLLM engines with the fair scheduler inside."""
