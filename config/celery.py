"""The Celery app shared by the web process (which sends tasks) and the workers."""

import contextlib
import os
from pathlib import Path

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("parity")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Beat keeps its schedule in a file (under var/ by default, which a fresh checkout lacks),
# and opens it before any signal a handler could make the folder in.
with contextlib.suppress(OSError):  # a read-only deployment names a writable file instead
    Path(app.conf.beat_schedule_filename).parent.mkdir(parents=True, exist_ok=True)


# The engine pool's task and worker hooks. Imported here, not discovered, because the
# hooks must be connected before the worker sends `worker_init`.
import workers.tasks  # noqa: E402, F401
