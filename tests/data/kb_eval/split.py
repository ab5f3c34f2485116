"""Splits the evaluation messages of each business into tuning and held-out files.

The split is by a fixed hash of the message text (FNV-1a, 64 bits): a message is held out
when the hash modulo 100 is below 30. It was made once, before the matcher was tuned, and
re-running this script on the two files gives the same two files.

    python3 tests/data/kb_eval/split.py
"""

import json
import pathlib

HERE = pathlib.Path(__file__).parent
HELD_OUT_PERCENT = 30


def fnv1a64(text: str) -> int:
    value = 0xCBF29CE484222325
    for byte in text.encode("utf-8"):
        value ^= byte
        value = (value * 0x100000001B3) % (1 << 64)
    return value


def main() -> None:
    for business in ["shop", "hotel"]:
        messages = []
        for part in ["tuning", "heldout"]:
            path = HERE / f"{business}_{part}.jsonl"
            if path.exists():
                messages += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        messages.sort(key=lambda message: message["message"])
        for part in ["tuning", "heldout"]:
            keep = [m for m in messages if (fnv1a64(m["message"]) % 100 < HELD_OUT_PERCENT) == (part == "heldout")]
            with open(HERE / f"{business}_{part}.jsonl", "w") as out:
                for message in keep:
                    out.write(json.dumps(message, ensure_ascii=False) + "\n")
            print(business, part, len(keep))


if __name__ == "__main__":
    main()
