"""edgekit inside an app, in ten lines: python app.py MESSAGES.txt SERVER_KEY.pub UPDATE_OUT"""
import sys
from pathlib import Path

from edgekit import EdgeModel
from edgekit.federated import device_key, export_update

if len(sys.argv) != 4:
    sys.exit(f"usage: {__doc__.split(': ', 1)[1]}")
messages, server_key, update_out = sys.argv[1:]
model = EdgeModel.load()  # the installed version, else the bundled model; personal state in $EDGEKIT_STATE_DIR or the user's data folder
for typed in ("see you tomo", "see you tomorrow at the "):  # the user types: a strip of three words each time
    print(f"{typed!r}: {[s.word for s in model.suggest(typed)]}")
report = model.personalize(Path(messages))  # what the user sent; kept only if it suggests better on held-out lines
print(f"held-out top-3 {report.before.top3:.1%} -> {report.after.top3:.1%}, adopted: {report.adopted}")
export_update(model, server_key, update_out, device_key=device_key(model.state_dir)[0])  # clipped, signed, sealed
