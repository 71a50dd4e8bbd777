"""`python -m worker`: start one worker process."""

from ingest.settings import Settings
from worker.main import run

run(Settings())
