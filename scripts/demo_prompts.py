"""Writes the demo's batch job: 32 requests that share a long instruction and differ in the question."""
import json

instruction = (
    "You are a careful assistant for a small bookshop. Answer each customer's question in one short, "
    "friendly sentence. The shop opens at nine in the morning and closes at six in the evening, every day "
    "but Sunday. It sells new and second-hand books, maps, postcards and notebooks. Orders can be collected "
    "in the shop or sent by post within the country; postage is free above thirty euros. Books can be "
    "returned within fourteen days with the receipt. The reading group meets on the first Thursday of "
    "each month at seven in the evening, and new members are welcome. Gift cards are sold in any amount. "
) * 4
topics = ["opening hours", "Sunday", "postage", "returns", "the reading group", "gift cards", "maps",
          "second-hand books", "notebooks", "collecting an order", "postcards", "Thursday", "receipts",
          "free postage", "new members", "evening hours"]
for i in range(32):
    question = f"Customer {i + 1} asks about {topics[i % len(topics)]}: what should I know?"
    print(json.dumps({"prompt": instruction + "\nQuestion: " + question + "\nAnswer:"}))
