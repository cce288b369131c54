"""Built-in prompt pools per task, so that `replay` has real text to run.

Code prompts are short Python tasks, chat and summarize are English prose, translate asks for text in a non-Latin
script (Japanese, Russian, Arabic, Chinese): the tokenizer-mismatch incident hits exactly those.
"""

from __future__ import annotations

import json

import numpy as np

from specdiag.simulate.incidents import TASKS

POOLS: dict[str, tuple[str, ...]] = {
    "code": (
        "Write a Python function that returns the n-th Fibonacci number iteratively.\n\ndef fib(n: int) -> int:",
        "Complete this function:\n\ndef is_palindrome(s: str) -> bool:\n    s = s.lower()\n",
        "Fix the bug:\n\ndef mean(xs):\n    return sum(xs) / len(xs) if xs else None\n\nprint(mean([]))",
        "Write a Python class Stack with push, pop and peek methods, raising IndexError when empty.",
        'def merge_sorted(a: list[int], b: list[int]) -> list[int]:\n    """Merge two sorted lists."""\n',
        "Refactor this loop into a list comprehension:\n\nout = []\nfor x in data:\n    if x > 0:\n        out.append(x * 2)",
        "Write a function that parses 'key=value' pairs separated by ';' into a dict.",
        "import json\n\ndef load_config(path):\n    # read the JSON file at path and return the 'settings' key\n",
    ),
    "chat": (
        "What are some good habits for staying focused while working from home?",
        "Can you explain how a refrigerator keeps food cold, in simple terms?",
        "I have a job interview tomorrow for a data analyst role. How should I prepare tonight?",
        "Suggest a three-day itinerary for a first visit to Lisbon.",
        "Why is the sky blue during the day but red at sunset?",
        "Write a short, friendly message to a neighbour asking them to water my plants next week.",
        "What is the difference between a virus and a bacterium?",
        "Give me five ideas for a vegetarian dinner that takes less than thirty minutes.",
    ),
    "summarize": (
        "Summarize: The city council met on Tuesday to discuss the new bicycle lanes. After two hours of debate, "
        "members voted seven to two to extend the lanes along the river, citing safety data from last year.",
        "Summarize the following in one sentence: Researchers found that short walks after meals lowered blood "
        "sugar levels in adults, with the effect strongest when the walk began within thirty minutes of eating.",
        "Summarize this email: Hi team, the quarterly review moves to Thursday at 10am. Please send your slides by "
        "Wednesday noon and flag any blockers in the shared document before then. Thanks, Dana",
        "TL;DR of this paragraph: The library will close for renovation from March to June. During that time, a "
        "temporary branch opens in the community centre with a smaller collection and shorter opening hours.",
        "Summarize: The company reported revenue growth of twelve percent, driven by subscriptions, while hardware "
        "sales fell. Management expects margins to improve as manufacturing moves to a new supplier.",
        "Give a two-line summary: A storm brought heavy rain to the coast overnight, flooding several roads. "
        "Emergency services advised residents to avoid travel until the water recedes later today.",
    ),
    "translate": (
        "Translate into English: 明日の会議は午後三時に始まります。資料を事前に確認してください。",
        "Translate into English: Погода сегодня солнечная, но к вечеру обещают дождь.",
        "Translate into English: يرجى إرسال التقرير قبل نهاية الأسبوع.",
        "Translate into English: 我们的新产品将在下个月发布，欢迎大家参加发布会。",
        "Translate into English: 駅までの道を教えていただけますか。",
        "Translate into English: Мы благодарим вас за ваше терпение и понимание.",
        "Translate into English: 这家餐厅的菜很好吃，但是价格有点贵。",
        "Translate into English: الاجتماع القادم سيكون يوم الاثنين في الساعة العاشرة.",
    ),
}


def approx_tokens(text: str) -> int:
    """Prompt tokens as a BPE tokenizer would roughly count them: ~4 ASCII chars per token, ~1 token per other
    character (non-Latin scripts split finely)."""
    ascii_chars = sum(1 for ch in text if ord(ch) < 128)
    return max(1, round(ascii_chars / 4) + (len(text) - ascii_chars))


class PromptPool:
    """All pools flattened; prompts of a task are indices [offset[t], offset[t] + size[t])."""

    def __init__(self) -> None:
        texts = [text for task in TASKS for text in POOLS[task]]
        self.escaped = np.array([json.dumps(t, ensure_ascii=False) for t in texts], dtype=object)
        self.tokens = np.array([approx_tokens(t) for t in texts])
        self.size = np.array([len(POOLS[task]) for task in TASKS])
        self.offset = np.concatenate([[0], np.cumsum(self.size)[:-1]])

    def sample(self, rng: np.random.Generator, task: np.ndarray) -> np.ndarray:
        """Prompt index for each request of the given task indices."""
        return self.offset[task] + (rng.random(len(task)) * self.size[task]).astype(int)
