"""The engine process's entry point: the target ``engine/host.py`` spawns.

The daemon names this function without importing what it runs: the backend
(faster-whisper, CTranslate2) is imported here, inside the child process
only, so an API node and the daemon's own memory never hold it."""

from __future__ import annotations

import os
from multiprocessing.connection import Connection

from sona.engine import EngineConfig
from sona.logs import configure as configure_logs


def main(conn: Connection, config: EngineConfig) -> None:
    configure_logs(config.log_level, fmt=config.log_format)
    os.nice(config.nice)  # on a shared CPU, requests to the daemon go first
    from sona.engine.child import EngineProcess  # the ML libraries, in the child only
    from sona.engine.whisper import WhisperBackend

    backend = WhisperBackend(
        device=config.device,
        compute_type=config.compute_type,
        cpu_threads=config.cpu_threads,
        replicas=config.replicas,
    )
    EngineProcess(conn, config, backend).serve()
