"""What a personalization reports, and how the options it tries are compared."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import NamedTuple


@dataclass(frozen=True)
class Accuracy:
    top1: float
    top3: float

    def __post_init__(self) -> None:  # plain floats (the learner's come from numpy): a repr that reads "0.25"
        object.__setattr__(self, "top1", float(self.top1))
        object.__setattr__(self, "top3", float(self.top3))


@dataclass(frozen=True)
class PersonalizeResult:
    """What a personalization did; ``to_dict()`` is the CLI's JSON."""

    adopted: bool  # the new head and phrase weight are in use (they beat the current state on held-out text)
    train_examples: int
    heldout_examples: int
    before: Accuracy  # held-out accuracy of the state before
    after: Accuracy  # ... of the best option tried
    new_personal_words: list[str] = field(default_factory=list)
    phrase_weight: float = 0.0
    seconds: float = 0.0
    before_new: Accuracy | None = None  # the same on held-out lines not written before (None: there were none)
    after_new: Accuracy | None = None
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase of the trial

    def to_dict(self) -> dict:
        return asdict(self)


class Score(NamedTuple):
    top1: float
    top3: float
    loss: float

    def beats(self, other: Score) -> bool:
        return (self.top3, self.top1, -self.loss) > (other.top3, other.top1, -other.loss)
