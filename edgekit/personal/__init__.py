"""What the device learns from its user, and keeps only on the device.

- ``rows``: examples over the candidate columns (the user's words), from one pass of the interpreter;
- ``train``: the head's training step (numpy Adam on softmax cross-entropy, restricted to the candidates)
  and option scoring;
- ``anchor``: text the model version writes itself, that bounds what learning changes elsewhere;
- ``gate``: the phrase memory's share per context, fitted on the user's held-out lines and anchor text;
- ``learner``: one personalization, from text to an adopted (or refused) change;
- ``phrases``: the phrase memory, the user's own n-grams;
- ``words``: what was learned, word by word, and forgetting a word;
- ``state``: the personal state file (atomic, 0600, bound to one model version).
"""
