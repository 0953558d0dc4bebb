"""The course server through the official ``openai`` Python client (pinned in requirements.txt):
what a user of any OpenAI-compatible endpoint does, against the app in-process (the client's
HTTP client is FastAPI's TestClient; the engine runs in a thread with the tiny model)."""

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from labkit.inference.language_model import load_tiny_gpt  # noqa: E402
from labkit.serving import config as cfg, frontend  # noqa: E402
from labkit.serving.protocol import render_chat  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return load_tiny_gpt()


@pytest.fixture(scope="module")
def client(model):
    import time

    from fastapi.testclient import TestClient

    app = frontend.create_app(cfg.ServerConfig(max_tokens_limit=64), model=model)
    with TestClient(app, base_url="http://testserver") as http:
        deadline = time.monotonic() + 30
        while http.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield openai.OpenAI(base_url="http://testserver/v1", api_key="unused",
                            http_client=http, max_retries=0)


def test_models_list(client):
    assert [m.id for m in client.models.list()] == ["tiny-gpt"]


def test_completion(client, model):
    r = client.completions.create(model="tiny-gpt", prompt="The pod", max_tokens=8)
    assert r.choices[0].text == model.generate("The pod", 8).text
    assert r.usage.completion_tokens == 8 and r.usage.prompt_tokens == 2


def test_streamed_completion_ends_with_a_usage_chunk(client, model):
    chunks = list(client.completions.create(model="tiny-gpt", prompt="The pod", max_tokens=8,
                                            stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == \
        model.generate("The pod", 8).text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_completion_plain_and_streamed(client, model):
    messages = [{"role": "user", "content": "What is a pod?"}]
    want = model.generate(render_chat(messages, "plain"), 6).text
    r = client.chat.completions.create(model="tiny-gpt", messages=messages, max_tokens=6)
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content == want
    chunks = list(client.chat.completions.create(model="tiny-gpt", messages=messages,
                                                 max_tokens=6, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == want
    assert chunks[-1].usage.completion_tokens == 6


def test_a_list_of_prompts_and_n_choices(client, model):
    r = client.completions.create(model="tiny-gpt", prompt=["The pod", "A node"], n=2,
                                  max_tokens=4, temperature=1.0, seed=7)
    assert sorted(c.index for c in r.choices) == [0, 1, 2, 3]
    # choice j of a prompt samples with seed + j: the first is what generate() samples alone
    assert r.choices[0].text == model.generate("The pod", 4, temperature=1.0, seed=7).text
    assert r.choices[2].text == model.generate("A node", 4, temperature=1.0, seed=7).text


def test_stop_seed_and_top_p(client, model):
    full = model.generate("The pod", 20).text
    r = client.completions.create(model="tiny-gpt", prompt="The pod", max_tokens=20,
                                  stop=[full[4:6]])
    assert r.choices[0].text == full[:full.index(full[4:6])]
    assert r.choices[0].finish_reason == "stop"
    a, b = (client.completions.create(model="tiny-gpt", prompt="A node", max_tokens=10,
                                      temperature=1.0, top_p=0.9, seed=5) for _ in range(2))
    assert a.choices[0].text == b.choices[0].text


def test_errors_use_openais_shape_and_status(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.completions.create(model="gpt-9", prompt="The pod")
    assert err.value.status_code == 404 and err.value.body["param"] == "model"
    assert set(err.value.response.json()["error"]) == {"message", "type", "param", "code"}
    with pytest.raises(openai.UnprocessableEntityError) as err:
        client.completions.create(model="tiny-gpt", prompt="The pod", max_tokens=1000)
    assert "max_tokens" in err.value.body["message"]
    with pytest.raises(openai.UnprocessableEntityError):
        client.completions.create(model="tiny-gpt", prompt="The pod", n=50)
