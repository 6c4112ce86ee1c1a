"""Embedding edgekit in a device app: one object the UI thread talks to.

The app calls ``on_text_changed`` on every keystroke and ``on_message_sent``
when the user sends; learning runs in the background when the device is idle
(charging, screen off), and an encrypted update is produced when the server
asks for one. Everything personal stays in the app's own state folder.
"""
from __future__ import annotations

import threading
from pathlib import Path

from edgekit import EdgeModel, Journal, PersonalizeResult
from edgekit.federated import device_key, export_update


class KeyboardPredictor:
    """Thread-safe wrapper: suggestions stay fast while learning happens elsewhere."""

    def __init__(self, app_dir: Path, model_path: Path | None = None, *, unsigned_local: bool = False):
        self.app_dir = Path(app_dir)
        self.journal = Journal(self.app_dir / "sent.txt")  # 0600, on disk once on_message_sent returns
        self._lock = threading.Lock()  # the model the UI thread reads
        # Learning, exporting and installing each rewrite the saved state: one at a time,
        # or a learner that loaded the state before an export would save the exported
        # contribution back, and the next update would count it twice.
        self._state_lock = threading.Lock()
        # A model_path you converted yourself loads only with unsigned_local=True (EdgeModel.load says why).
        self._model = EdgeModel.load(model_path, state_dir=self.app_dir / "state", num_threads=1,
                                     unsigned_local=unsigned_local)

    def on_text_changed(self, text: str) -> list[str]:
        """Three words for the suggestion strip (completions while mid-word)."""
        with self._lock:
            return [s.word for s in self._model.suggest(text, k=3)]

    def on_message_sent(self, text: str) -> None:
        self.journal.append(text)

    def learn_when_idle(self) -> PersonalizeResult | None:
        """Personalize on the messages sent since the last learning; call from a background job.

        Returns None when nothing new was sent. Each message is learned once:
        learning old ones again would put them into the next update again.
        Raises ``ValueError`` while there is too little new text; it waits for more.
        """
        if not self.journal.pending():  # spare loading a second model when there is nothing to learn
            return None
        with self._state_lock:
            learner = EdgeModel.load(self._model.path, state_dir=self.app_dir / "state",
                                     unsigned_local=self._model.origin == "local")  # the same file, trusted alike
            report = self.journal.learn(learner)  # saved atomically; the head changes only if it helped
            with self._lock:  # swap between two keystrokes: the learner holds the newest state either way
                self._model = learner
        return report

    def update_for_server(self, server_public_key: bytes) -> bytes:
        """The sealed head delta (clipped, encrypted) for the federated round.

        It carries what was learned since the previous update, and producing
        it consumes that: deliver it, or it is lost to the federation (the
        user's suggestions keep what was learned). Raises ``ValueError`` when
        nothing new was learned.
        """
        with self._state_lock, self._lock:
            return export_update(self._model, server_public_key, device_key=device_key(self.app_dir / "state")[0])

    def install_global(self, new_model: Path) -> None:
        """A new global version arrived: keep personalization, switch the model."""
        with self._state_lock, self._lock:
            self._model.install_global(new_model)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        kb = KeyboardPredictor(Path(d))
        for msg in ["running late, see you at the station", "at the station now", "see you at the cafe"] * 20:
            kb.on_message_sent(msg)
        print("before:", kb.on_text_changed("see you at the "))
        print(kb.learn_when_idle().to_dict())
        print("after: ", kb.on_text_changed("see you at the "))
