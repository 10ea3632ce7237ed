"""The key files each service holds, and no more.

Every service seals what it writes and checks the seals of what it reads (seal-keys.json); the
notice senders sign (signing-keys.json, the private key, beside public-keys.json); the console
checks the notices it shows (public-keys.json). Kubernetes mounts each service's files from its
Secrets (deploy/k8s). Compose keeps them in one `keys` volume: every key in its folder `all`, and
each service's files copied into a folder of its own, which is all the service mounts (a volume
`subpath`). The volume's top holds no key, so a Compose that ignored the subpath would hand the
service no seal key and it would not start, rather than every key. `python -m shared.keysets DIR`
(the `keys` one-shot) makes the keys that are missing and lays the folders out again (after a
rotation too). tests/deploy checks compose and k8s against HELD.
"""

import json
import os
import sys
from pathlib import Path

from shared.keyfiles import write_json
from shared.seals import SEAL_FILE
from shared.signing import PUBLIC_FILE, SIGNING_FILE, ensure_keys

SENDER = (SEAL_FILE, SIGNING_FILE, PUBLIC_FILE)
HELD: dict[str, tuple[str, ...]] = {
    "intake": (SEAL_FILE,),
    "validation": (SEAL_FILE,),
    "supplementation": (SEAL_FILE,),
    "referral": SENDER,
    "retraction": SENDER,
    "console": (SEAL_FILE, PUBLIC_FILE),
}
ALL = "all"  # the folder of every key: what `tipline keys` and the one-shot manage


def lay_out(root: Path) -> str:
    """Every key in root/all (those missing made), each service's files copied into
    root/<service>/; returns the active signing key's id. Keys at the top of root (a volume from
    before the folders) move into root/all first, so the same keys go on."""
    every = root / ALL
    every.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in SENDER:
        if (root / name).exists() and not (every / name).exists():
            os.replace(root / name, every / name)
    active = ensure_keys(every)
    for service, names in HELD.items():
        folder = root / service
        folder.mkdir(exist_ok=True, mode=0o700)
        for name in names:  # replaced whole: a service re-reads a changed file
            write_json(folder / name, json.loads((every / name).read_text()), 0o600)
        for stray in set(os.listdir(folder)) - set(names):
            os.unlink(folder / stray)  # a copy it must no longer hold (the key stays in all/)
    return active


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m shared.keysets DIR", file=sys.stderr)
        return 2
    root = Path(argv[1])
    active = lay_out(root)
    print(f"active signing key {active}; every key in {root / ALL}, each service's own in "
          f"{root}/<service>")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
