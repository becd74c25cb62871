"""The official OpenAI and Anthropic Python SDKs against a running llmgw.

Run by tests/e2e/sdk.rs with the gateway's base URL; exits non-zero (with
the failing assertion) on any mismatch. Not a pytest module on purpose: the
Rust test owns the gateway process and its lifetime.
"""
import sys

import anthropic
import openai


def check_openai(base: str) -> None:
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="sk-client-key", max_retries=0)

    models = client.models.list()
    ids = [m.id for m in models.data]
    assert ids, "models.list returned nothing"

    chat = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}]
    )
    assert chat.choices[0].message.content, chat
    assert chat.choices[0].finish_reason == "stop", chat
    assert chat.usage.completion_tokens > 0, chat.usage

    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Stream please"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text, "no streamed content"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0, chunks[-1]
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)

    comp = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Once upon")
    assert comp.choices[0].text, comp

    emb = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0, emb


def check_anthropic(base: str) -> None:
    client = anthropic.Anthropic(base_url=base, api_key="sk-ant-client", max_retries=0)
    msg = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "Hello"}],
    )
    assert msg.content[0].text, msg
    assert msg.stop_reason == "end_turn", msg
    assert msg.usage.output_tokens > 0, msg.usage

    with client.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "Stream"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text, "no streamed text"
    assert final.usage.output_tokens > 0, final.usage
    assert final.stop_reason == "end_turn", final


if __name__ == "__main__":
    base = sys.argv[1].rstrip("/")
    check_openai(base)
    check_anthropic(base)
    print("sdk checks passed")
