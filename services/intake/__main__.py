"""Run intake: the ESP APIs on the HTTP port, health and metrics on the ops port, until SIGTERM."""

from services.intake.main import create_app
from shared.service import run_http

run_http(create_app)
