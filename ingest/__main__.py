"""`python -m ingest …`: the same as the `ingest` console script."""

import signal
import sys

# Until the event loop takes SIGTERM over, being stopped means there is nothing to finish yet.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

from ingest.cli import main  # noqa: E402

main()
