"""Image parts on both wires: accepted shapes, input usage, and the providers' refusals."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from server.simulator.anthropic_wire import MAX_IMAGE_BYTES
from server.simulator.content import IMAGE_TOKENS
from server.tokens import conversation_tokens

from .helpers import DEEPSEEK, GPT, SONNET, anthropic_tools, png_base64, png_bytes

OPENAI = "/chat/completions"
ANTHROPIC = "/messages"


def openai_image(url: str, text: str = "What is this?", role: str = "user") -> dict[str, Any]:
    parts = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]
    return {"model": GPT, "messages": [{"role": role, "content": parts}]}


def anthropic_image(source: dict[str, Any], model: str = SONNET) -> dict[str, Any]:
    blocks = [{"type": "text", "text": "What is this?"}, {"type": "image", "source": source}]
    return {"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": blocks}]}


def base64_source(data: str, media_type: str = "image/png") -> dict[str, Any]:
    return {"type": "base64", "media_type": media_type, "data": data}


@pytest.mark.parametrize(
    "url", [f"data:image/png;base64,{png_base64()}", "https://example.com/cat.png"]
)
async def test_openai_image_parts_are_read_and_counted(client: httpx.AsyncClient, url: str) -> None:
    response = await client.post(OPENAI, json=openai_image(url))
    assert response.status_code == 200
    answer = response.json()
    assert answer["usage"]["prompt_tokens"] == conversation_tokens(["What is this?"]) + IMAGE_TOKENS
    assert '"What is this?":' in answer["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    ("body", "fragment", "param"),
    [
        (
            openai_image("data:text/plain;base64,aGk="),
            "but got unsupported MIME type 'text/plain'",
            "messages[0].content[1].image_url.url",
        ),
        (openai_image("cat.png"), "Expected a valid URL", "messages[0].content[1].image_url.url"),
        (
            openai_image("https://example.com/cat.png", role="system"),
            "Invalid value: 'image_url'. Supported values are: 'text'.",
            "messages[0].content[1].type",
        ),
        (
            {"model": GPT, "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "Supported values are: 'text' and 'image_url'.",
            "messages[0].content[0].type",
        ),
    ],
)
async def test_openai_invalid_images_are_400(
    client: httpx.AsyncClient, body: dict[str, Any], fragment: str, param: str
) -> None:
    response = await client.post(OPENAI, json=body)
    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]
    assert response.json()["error"]["param"] == param


async def test_a_model_without_vision_refuses_images(client: httpx.AsyncClient) -> None:
    body = {**openai_image("https://example.com/cat.png"), "model": DEEPSEEK}
    response = await client.post(OPENAI, json=body)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "deepseek-v3.2 does not support image input."
    response = await client.post(
        ANTHROPIC, json=anthropic_image(base64_source(png_base64()), DEEPSEEK)
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    "source", [base64_source(png_base64()), {"type": "url", "url": "https://example.com/cat.png"}]
)
async def test_anthropic_images_are_read_and_counted(
    client: httpx.AsyncClient, source: dict[str, Any]
) -> None:
    response = await client.post(ANTHROPIC, json=anthropic_image(source))
    assert response.status_code == 200
    usage = response.json()["usage"]
    assert usage["input_tokens"] == conversation_tokens(["What is this?"]) + IMAGE_TOKENS


async def test_anthropic_base64_images_are_limited_to_5_mb_of_base64(
    client: httpx.AsyncClient,
) -> None:
    overhead = len(png_bytes(1)) - 1
    at_limit = png_base64(MAX_IMAGE_BYTES // 4 * 3 - overhead)
    assert len(at_limit) == MAX_IMAGE_BYTES
    accepted = await client.post(ANTHROPIC, json=anthropic_image(base64_source(at_limit)))
    assert accepted.status_code == 200

    over = png_base64(MAX_IMAGE_BYTES // 4 * 3 - overhead + 1)
    refused = await client.post(ANTHROPIC, json=anthropic_image(base64_source(over)))
    assert refused.status_code == 400
    assert refused.json() == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": (
                "messages.0.content.1.image.source.base64: image exceeds 5 MB maximum: "
                f"{len(over)} bytes > 5242880 bytes"
            ),
        },
    }


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        (
            base64_source(png_base64(), "image/jpeg"),
            "messages.0.content.1.image.source.base64.data: The image was specified using the "
            "image/jpeg media type, but the image appears to be a image/png image",
        ),
        (
            base64_source(png_base64(), "image/bmp"),
            "media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'",
        ),
        (base64_source("not base64 at all!"), "The image data is not valid base64."),
        (base64_source("aGVsbG8gd29ybGQgaGVsbG8="), "Could not process image"),
        (
            {"type": "url", "url": "ftp://example.com/cat.png"},
            "source.url.url: Input should be a valid URL",
        ),
        ({"type": "file", "file_id": "f"}, "Input tag 'file'"),
    ],
)
async def test_anthropic_invalid_images_are_400(
    client: httpx.AsyncClient, source: dict[str, Any], fragment: str
) -> None:
    response = await client.post(ANTHROPIC, json=anthropic_image(source))
    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]


async def test_anthropic_images_inside_tool_results(client: httpx.AsyncClient) -> None:
    use = {"type": "tool_use", "id": "toolu_1", "name": "camera", "input": {}}
    result = {
        "type": "tool_result",
        "tool_use_id": "toolu_1",
        "content": [
            {"type": "text", "text": "snapshot taken"},
            {"type": "image", "source": base64_source(png_base64())},
        ],
    }
    body: dict[str, Any] = {
        "model": SONNET,
        "max_tokens": 100,
        "tools": anthropic_tools("camera", schema=None),
        "messages": [
            {"role": "user", "content": "look"},
            {"role": "assistant", "content": [use]},
            {"role": "user", "content": [result]},
        ],
    }
    response = await client.post(ANTHROPIC, json=body)
    assert response.status_code == 200
    assert 'given tool result "snapshot taken":' in response.json()["content"][0]["text"]
    body["messages"][2]["content"][0]["content"][1]["source"]["media_type"] = "image/gif"
    assert (await client.post(ANTHROPIC, json=body)).status_code == 400
