from collections.abc import Sequence
from typing import Any

class Scorer:
    def __init__(self, plan: tuple[Any, ...]) -> None: ...
    def score_batch(
        self, values_list: Sequence[Any], normalized: dict[str, str]
    ) -> list[dict[str, Any]]: ...
