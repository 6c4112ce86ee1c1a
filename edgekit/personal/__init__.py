"""What the device learns from its user, and keeps only on the device.

- ``train``: the head's training step (numpy Adam on softmax cross-entropy) and option scoring;
- ``learner``: one personalization, from text to an adopted (or refused) change;
- ``phrases``: the phrase memory, the user's own n-grams;
- ``state``: the personal state file (atomic, 0600, bound to one model version).
"""
