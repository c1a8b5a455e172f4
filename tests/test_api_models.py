"""EMT tasks through lm-eval's chat-completions models against a loopback OpenAI-compatible server.

``openai-chat-completions`` is the GPT-4o path (key from ``OPENAI_API_KEY``), ``local-chat-completions``
the path for any OpenAI-compatible server (vLLM serving LLaVA, ...). The test checks what goes over the
wire: one chat request per image, the image inline as a base64 PNG data URL, the EMT prompt, greedy
decoding; and that the server's answers are what gets judged.
"""

from __future__ import annotations

import base64
import io

import pytest
from conftest import read_results, run_emtbench
from openai_server import OpenAIServer
from PIL import Image

LIMIT = 3
DIGITS_PROMPT = (
    "What is the number in the image? Please only answer a single number in 0, 1, 2, 3, 4, 5, 6, 7, 8, 9."
)


@pytest.mark.slow
def test_emt_task_sends_base64_images_and_judges_answers(tmp_path, monkeypatch):
    # openai-chat-completions subclasses local-chat-completions (same payload code); one run covers both.
    model = "openai-chat-completions"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-emtbench-test")
    with OpenAIServer(default="The number is 7.") as server:
        code = run_emtbench(
            "eval", "--model", model,
            "--model_args", f"model=gpt-4o-mini,base_url={server.base_url}/chat/completions,max_retries=1",
            "--tasks", "emt_digits", "--limit", str(LIMIT), "--apply_chat_template",
            "--output_path", str(tmp_path),
        )  # fmt: skip
        requests = list(server.requests)
    assert code == 0
    assert len(requests) == LIMIT
    for request in requests:
        assert request.path.endswith("/chat/completions")
        assert request.body["model"] == "gpt-4o-mini"
        assert request.body.get("temperature", 0) == 0
        content = request.body["messages"][-1]["content"]
        images = [part for part in content if part["type"] == "image_url"]
        assert len(images) == 1
        url = images[0]["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert image.format == "PNG" and image.size[0] > 0
        assert DIGITS_PROMPT in request.prompt
    assert requests[0].headers.get("authorization") == "Bearer sk-emtbench-test"

    metrics = read_results(tmp_path)["results"]["emt_digits"]
    # "The number is 7." names exactly one label: every answer is either right or wrong, none empty.
    assert metrics["acc,none"] + metrics["wrong,none"] == pytest.approx(1.0)
    assert metrics["empty,none"] == 0
