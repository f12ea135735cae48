"""The Celery app shared by the web process (which sends tasks) and the workers."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("parity")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The engine pool's task and worker hooks. Imported here, not discovered, because the
# hooks must be connected before the worker sends `worker_init`.
import workers.tasks  # noqa: E402, F401
