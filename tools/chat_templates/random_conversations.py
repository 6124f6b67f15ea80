#!/usr/bin/env python3
"""Writes N random conversations (OpenAI-style JSON, as in tests/goldens/chat_templates/cases) for
tools/chat_templates/compare.mjs, to check templates on conversations nobody wrote by hand.

They mix: a system message or none; user turns (sometimes named, sometimes two in a row); assistant turns with
text, lists of text parts (and an image part), null or empty content, reasoning_content; tool calls whose arguments
are objects or JSON strings of strings, integers, floats (-0.0, 1e21, 1e-7), booleans, null, lists and objects,
each followed by its tool result; a last message of any role. Some are objects with "tools" and "enable_thinking".
Deterministic from SEED.

    python3 tools/chat_templates/random_conversations.py SEED N OUT_DIR
"""
import json
import os
import random
import sys

TEXTS = ["Hi", "", " ", "Hello, world!", "a\nb", "  padded  ", "{{ x }}", "caf\u00e9 \u4e2d \U0001F600",
         "\"quoted\" 'single' \\", "\t\ttabs", "<|im_end|>", "[INST]", "line\n\n\nbreaks\n",
         "<think>\nr\n</think>\nanswer", "0", "null", "true"]
FLOATS = [0.5, -0.0, 1.0, 1e21, 3.14159, 1e-7, 2.0]
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather.", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "add", "parameters": {
        "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}}},
]


def value(rnd, depth=0):
    """A JSON value for tool arguments; lists and objects nest at most two deep."""
    kinds = ["text", "int", "float", "bool", "null"] + (["list", "object"] if depth < 2 else [])
    kind = rnd.choice(kinds)
    if kind == "text":
        return rnd.choice(TEXTS)
    if kind == "int":
        return rnd.randint(-5, 10**12)
    if kind == "float":
        return rnd.choice(FLOATS)
    if kind == "bool":
        return rnd.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [value(rnd, depth + 1) for _ in range(rnd.randrange(3))]
    return {rnd.choice(["a", "b", "city", "n", "x y"]): value(rnd, depth + 1) for _ in range(rnd.randrange(3))}


def content(rnd):
    """A message's content: text (most often), a list of parts, null or empty."""
    r = rnd.random()
    if r < 0.6:
        return rnd.choice(TEXTS) + rnd.choice(["", " more text"])
    if r < 0.8:
        parts = [{"type": "text", "text": rnd.choice(TEXTS)} for _ in range(rnd.randint(1, 2))]
        return parts + ([{"type": "image"}] if rnd.random() < 0.3 else [])
    return None if r < 0.9 else ""


def tool_call(rnd, number):
    args = {rnd.choice(["city", "a", "b", "q"]): value(rnd) for _ in range(rnd.randrange(3))}
    return {"id": f"call{number:05d}", "type": "function", "function": {
        "name": rnd.choice(["get_weather", "add", "search"]),
        "arguments": json.dumps(args) if rnd.random() < 0.4 else args}}


def conversation(rnd):
    messages = []
    if rnd.random() < 0.6:
        messages.append({"role": "system", "content": content(rnd)})
    for turn in range(rnd.randint(1, 4)):
        user = {"role": "user", "content": content(rnd)}
        if rnd.random() < 0.1:
            user["name"] = "bob"
        messages.append(user)
        if rnd.random() >= 0.8:
            continue  # two user turns in a row, or a conversation that ends on the user
        assistant = {"role": "assistant", "content": content(rnd)}
        if rnd.random() < 0.3:
            assistant["tool_calls"] = [tool_call(rnd, turn * 10 + j) for j in range(rnd.randint(1, 2))]
            messages.append(assistant)
            for call in assistant["tool_calls"]:
                messages.append({"role": "tool", "tool_call_id": call["id"], "name": call["function"]["name"],
                                 "content": rnd.choice(TEXTS)})
            if rnd.random() < 0.5:
                messages.append({"role": "assistant", "content": content(rnd)})
        else:
            if rnd.random() < 0.2:
                assistant["reasoning_content"] = rnd.choice(TEXTS)
            messages.append(assistant)
    if rnd.random() < 0.15:
        messages.append({"role": rnd.choice(["assistant", "developer", "user"]), "content": content(rnd)})
    if rnd.random() >= 0.4:
        return messages
    case = {"messages": messages}
    if rnd.random() < 0.6:
        case["tools"] = TOOLS
    if rnd.random() < 0.3:
        case["enable_thinking"] = rnd.random() < 0.5
    return case


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: random_conversations.py SEED N OUT_DIR")
    rnd = random.Random(int(sys.argv[1]))
    os.makedirs(sys.argv[3], exist_ok=True)
    for i in range(int(sys.argv[2])):
        case = conversation(rnd)
        with open(f"{sys.argv[3]}/r{i:03d}.json", "w", encoding="utf-8") as f:
            json.dump(case, f, ensure_ascii=rnd.random() < 0.5)


if __name__ == "__main__":
    main()
