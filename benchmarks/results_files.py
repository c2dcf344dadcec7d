"""Where every benchmark leaves its figures: ``<stem>.json`` (the record) and ``<stem>.md`` (its table)."""

from __future__ import annotations

import json
from pathlib import Path

from MultiModalSegLib.atomic import write_text_atomic


def save_results(folder: Path, stem: str, record: dict | list, markdown: str) -> tuple[Path, Path]:
    """Write ``record`` as JSON and ``markdown`` beside it, each atomically; returns both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path = write_text_atomic(folder / f"{stem}.json", json.dumps(record, indent=2) + "\n")
    md_path = write_text_atomic(folder / f"{stem}.md", markdown)
    return json_path, md_path
