"""Write the quickstart preference dataset: helpful, polite replies preferred over curt ones.

The pairs are synthetic and small on purpose: a tiny randomly initialised model can learn the
preference in a minute on a laptop CPU, which is all the quickstart shows. Run from the
repository root to regenerate ``examples/data/quickstart_*.jsonl``; the output is deterministic.
"""

import json
import random
from pathlib import Path

TOPICS = [
    "bake bread",
    "tie a tie",
    "learn to swim",
    "plant tomatoes",
    "fix a flat tyre",
    "write a poem",
    "save money",
    "sleep better",
    "start running",
    "clean a window",
    "make tea",
    "paint a fence",
    "study for a test",
    "fold a shirt",
    "boil an egg",
    "learn chess",
    "care for a cat",
    "read faster",
    "sharpen a knife",
    "pack a suitcase",
    "make friends",
    "draw a horse",
    "wash a car",
    "grow basil",
    "keep a diary",
]
QUESTIONS = [
    "How do I {topic}?",
    "Can you tell me how to {topic}?",
    "What is the best way to {topic}?",
    "Any tips to {topic}?",
]
CHOSEN = [
    "Sure! To {topic}, start slowly and take it one step at a time. You will get there.",
    "Happy to help. The key to {topic} is patience: begin simply, then practise a little each day.",
    "Great question! To {topic}, gather what you need first, then follow each step with care.",
]
REJECTED = [
    "No. Figure it out.",
    "Why would I help you {topic}? Go away.",
    "That is a stupid question.",
]


def make_pairs(rng: random.Random, count: int) -> list[dict]:
    pairs = []
    for _ in range(count):
        topic = rng.choice(TOPICS)
        pairs.append(
            {
                "prompt": rng.choice(QUESTIONS).format(topic=topic),
                "chosen": rng.choice(CHOSEN).format(topic=topic),
                "rejected": rng.choice(REJECTED).format(topic=topic),
            }
        )
    return pairs


def main() -> None:
    rng = random.Random(0)
    folder = Path(__file__).parent / "data"
    folder.mkdir(exist_ok=True)
    for name, count in (("train", 256), ("validation", 64)):
        with open(folder / f"quickstart_{name}.jsonl", "w", encoding="utf-8") as out:
            for pair in make_pairs(rng, count):
                out.write(json.dumps(pair) + "\n")


if __name__ == "__main__":
    main()
