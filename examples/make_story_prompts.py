"""Write the story openings that the GRPO example on stories260K completes.

stories260K was trained on TinyStories, so openings in that style get fluent completions. About
one sampled completion in six already names a girl called Lily, so a reward for mentioning her
is one a 260K-parameter model can learn in a few dozen steps. No opening names anyone. Run from the
repository root to regenerate ``examples/data/story_prompts_*.jsonl``; the output is
deterministic.
"""

import json
import random
from pathlib import Path

OPENINGS = [
    "Once upon a time,",
    "Once upon a time, there was a little {animal}.",
    "One day,",
    "One sunny day,",
    "Once upon a time, in a small {place},",
    "One day, a little {animal} went to the {place}.",
    "Once there was a {adjective} {animal}.",
    "One morning, a {adjective} {animal} woke up.",
    "Once upon a time, there was a {adjective} {place}.",
    "It was a {adjective} day in the {place}.",
]
ANIMALS = ["cat", "dog", "bird", "bunny", "bear", "fish", "duck", "frog"]
PLACES = ["park", "forest", "house", "garden", "town", "school", "river", "farm"]
ADJECTIVES = ["happy", "big", "little", "kind", "funny", "sunny", "quiet", "shiny"]


def make_prompts(rng: random.Random, count: int) -> list[dict]:
    prompts = []
    for _ in range(count):
        opening = rng.choice(OPENINGS).format(
            animal=rng.choice(ANIMALS), place=rng.choice(PLACES), adjective=rng.choice(ADJECTIVES)
        )
        prompts.append({"prompt": opening})
    return prompts


def main() -> None:
    rng = random.Random(0)
    folder = Path(__file__).parent / "data"
    folder.mkdir(exist_ok=True)
    for name, count in (("train", 256), ("validation", 32)):
        with open(folder / f"story_prompts_{name}.jsonl", "w", encoding="utf-8") as out:
            for row in make_prompts(rng, count):
                out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
