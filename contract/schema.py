"""Export the wire contract as JSON Schema files (docs/contract/)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from contract.messages import TOP_LEVEL_MESSAGES, Event


def _file_name(title: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", title).lower() + ".schema.json"


def schemas() -> dict[str, dict[str, Any]]:
    """Return every schema keyed by its file name."""
    out: dict[str, dict[str, Any]] = {}
    for model in TOP_LEVEL_MESSAGES:
        out[_file_name(model.__name__)] = model.model_json_schema()
    event_schema = TypeAdapter(Event).json_schema()
    event_schema["title"] = "Event"
    out[_file_name("Event")] = event_schema
    return out


def render(schema: dict[str, Any]) -> str:
    """Serialise one schema the way it is stored (stable key order, trailing newline)."""
    return json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def export(out_dir: Path) -> list[Path]:
    """Write every schema into `out_dir` and remove stale schema files; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = schemas()
    for stale in out_dir.glob("*.schema.json"):
        if stale.name not in wanted:
            stale.unlink()
    written = []
    for name, schema in sorted(wanted.items()):
        path = out_dir / name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    import sys

    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/contract")
    for written in export(target):
        sys.stdout.write(f"{written}\n")
