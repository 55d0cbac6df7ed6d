"""Request translation time: OpenAI Chat Completions <-> Anthropic Messages, by chat length.

    python benchmarks/bench_translate.py [--repeat 5] [--number 2000]

An OpenAI SDK calling a Claude model (or an Anthropic SDK an OpenAI model) pays this on every
request, and a long agent conversation is sent whole every turn. Each row is the best of
`--repeat` timings of `--number` translations of one request, in microseconds per request:
chats of 2, 20 and 200 turns, alternating user text parts and assistant answers.
"""

from __future__ import annotations

import argparse
import sys
import timeit

from concord.translate.anthropic_openai import (
    anthropic_request_to_openai,
    openai_request_to_anthropic,
)

JSON = dict[str, object]


def openai_chat(turns: int) -> JSON:
    messages: list[JSON] = [{"role": "system", "content": "Answer briefly."}]
    for turn in range(turns // 2):
        text = f"Question {turn}: what does the log line at step {turn} mean? " * 3
        messages.append({"role": "user", "content": [{"type": "text", "text": text}]})
        messages.append({"role": "assistant", "content": f"It means step {turn} finished. " * 3})
    return {"model": "claude", "messages": messages, "max_tokens": 256, "temperature": 0}


def timed(function: object, body: JSON, repeat: int, number: int) -> float:
    runs = timeit.repeat(lambda: function(body), number=number, repeat=repeat)  # type: ignore[operator]
    return min(runs) / number * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--number", type=int, default=2000)
    args = parser.parse_args()
    print(f"{'turns':>6}{'OpenAI -> Anthropic (µs)':>28}{'Anthropic -> OpenAI (µs)':>28}")
    for turns in (2, 20, 200):
        openai_body = openai_chat(turns)
        anthropic_body = openai_request_to_anthropic(openai_body)
        anthropic_body["model"] = "gpt"
        to_anthropic = timed(openai_request_to_anthropic, openai_body, args.repeat, args.number)
        to_openai = timed(anthropic_request_to_openai, anthropic_body, args.repeat, args.number)
        print(f"{turns:>6}{to_anthropic:>28.1f}{to_openai:>28.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
