"""``python -m server.simulator`` starts, prints its URL, answers, and stops on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys

import httpx

from .helpers import openai_body


async def test_module_serves_and_prints_its_url() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server.simulator",
        "--port",
        "0",
        "--latency-scale",
        "0",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=20)
        url = line.decode().strip()
        assert url.startswith("http://127.0.0.1:")
        assert url.endswith("/v1")
        async with httpx.AsyncClient(base_url=url) as client:
            response = await client.post("/chat/completions", json=openai_body("hello"))
        assert response.status_code == 200
        assert response.json()["object"] == "chat.completion"
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
