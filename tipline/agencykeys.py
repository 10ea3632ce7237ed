"""Agency response-signing keys: made by the agency, registered in tipline's routing file.

Only acknowledgements and outcomes signed by a key registered for their agency count (the
retraction service dead-letters the rest), so registering a key is part of adding an agency.
`tipline agency keys ID --dir DIR` makes (or rotates) the agency's key and registers its public
half; the services pick the routing file up without a restart.
"""

import io
import json
from datetime import timedelta
from pathlib import Path

from ruamel.yaml import YAML

from shared.signing import PUBLIC_FILE, SIGNING_FILE, Rotation, rotate


def make_key(keys_dir: Path, overlap: timedelta) -> tuple[Rotation, list[str]]:
    """A new active key in `keys_dir`; returns it and the public keys to register (the new one
    and the one it replaces, for the overlap)."""
    done = rotate(keys_dir, overlap=overlap)
    listed = json.loads((keys_dir / PUBLIC_FILE).read_text())["keys"]
    return done, [k["public_key"] for k in listed
                  if not k.get("not_after") or k["key_id"] == done.retiring]


def _yaml() -> YAML:
    yaml = YAML()  # round trip: the file's comments and layout stay as the operator wrote them
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    return yaml


def register(routing: Path, agency_id: str, public_keys: list[str]) -> None:
    """Make `public_keys` the agency's verify_keys in the routing file."""
    yaml = _yaml()
    data = yaml.load(routing.read_text())
    entry = next((a for a in data.get("agencies", []) if a.get("id") == agency_id), None)
    if entry is None:
        raise LookupError(f"no agency {agency_id} in {routing}")
    entry["verify_keys"] = public_keys
    out = io.StringIO()
    yaml.dump(data, out)
    tmp = routing.with_suffix(".tmp")
    tmp.write_text(out.getvalue())
    tmp.replace(routing)  # services re-reading it see the old file or the new one


def dev_routing(source: Path, workdir: Path) -> Path:
    """For a development stack: a copy of `source` in the workdir in which every agency that has
    no key gets one, kept in `workdir/agency-keys/<id>` (the demo's agencies sign with them)."""
    routing = workdir / "routing.yaml"
    routing.write_text(source.read_text())
    for agency in _yaml().load(source.read_text()).get("agencies", []):
        if agency.get("verify_keys"):
            continue
        keys_dir = workdir / "agency-keys" / agency["id"]
        if not (keys_dir / SIGNING_FILE).exists():
            make_key(keys_dir, timedelta(days=7))
        public = [k["public_key"] for k in json.loads((keys_dir / PUBLIC_FILE).read_text())["keys"]]
        register(routing, agency["id"], public)
    return routing
