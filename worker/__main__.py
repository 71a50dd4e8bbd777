"""`python -m worker`: start one worker process."""

import signal
import sys

# Until the event loop takes SIGTERM over, being stopped means there is nothing to finish yet.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

from ingest.settings import Settings  # noqa: E402
from worker.main import run  # noqa: E402

run(Settings())
