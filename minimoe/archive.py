"""The results archive: a study's cell files packed into one compressed file, and back.

`minimoe reproduce` writes one JSON file per cell (`seed3/two_stage.json`), which is what a
running study needs: a finished cell is saved at once and reused on a rerun. A finished study
keeps them in one `cells.jsonl.gz` beside its tables — one line per cell file,
{"path": "seed3/two_stage.json", "cell": {...}} — so the archive stays small and readable.

    python -m minimoe.archive pack lessons/results/plateau        # seed*/*.json → cells.jsonl.gz
    python -m minimoe.archive unpack lessons/results/plateau DIR  # cells.jsonl.gz → DIR/seed*/*.json

`unpack` gives back the folder layout `minimoe reproduce` reads, so a packed study rebuilds its
tables exactly as before (tests/test_committed_results.py); `read_cells` reads either layout.
Read next: `minimoe/verdicts.py`.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from minimoe.errors import DataError, Parser

PACKED = "cells.jsonl.gz"


def cell_files(folder: Path) -> list[Path]:
    """The unpacked cell files of a study folder, in a stable order."""
    return sorted(Path(folder).glob("seed*/*.json"))


def pack(folder: Path) -> Path:
    """Write every `seed*/*.json` of folder into folder/cells.jsonl.gz and delete them."""
    folder = Path(folder)
    files = cell_files(folder)
    if not files:
        raise DataError(f"{folder} has no seed*/*.json cell files to pack")
    # mtime=0: the same cells always give the same bytes, so git sees no change on a repack.
    with open(folder / PACKED, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        for path in files:
            record = {"path": path.relative_to(folder).as_posix(), "cell": json.loads(path.read_text())}
            gz.write((json.dumps(record, sort_keys=True) + "\n").encode())
    for path in files:
        path.unlink()
    for seed_dir in {p.parent for p in files}:
        if not any(seed_dir.iterdir()):
            seed_dir.rmdir()
    return folder / PACKED


def packed_cells(folder: Path) -> list[tuple[str, dict]]:
    """[(relative path, cell json)] of folder's cells.jsonl.gz ([] when there is none)."""
    path = Path(folder) / PACKED
    if not path.is_file():
        return []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [(rec["path"], rec["cell"]) for rec in map(json.loads, f)]


def unpack(folder: Path, dest: Path) -> Path:
    """Write folder's packed cells as dest/seed*/*.json (and its config.json), for `reproduce`."""
    dest = Path(dest)
    for rel, cell in packed_cells(folder):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(json.dumps(cell, indent=2))
    if (Path(folder) / "config.json").is_file():
        (dest / "config.json").write_text((Path(folder) / "config.json").read_text())
    return dest


def read_cells(folder: Path) -> dict[str, dict[int, dict]]:
    """{cell name: {upstream seed: cell json}} from cells.jsonl.gz and/or seed*/<cell>.json."""
    found: dict[str, dict[int, dict]] = {}
    unpacked = [(p.relative_to(folder).as_posix(), json.loads(p.read_text())) for p in cell_files(folder)]
    for rel, cell in packed_cells(folder) + unpacked:
        seed_dir, name = rel.split("/")
        found.setdefault(name.removesuffix(".json"), {})[int(seed_dir.removeprefix("seed"))] = cell
    return found


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m minimoe.archive", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("pack", help="seed*/*.json → cells.jsonl.gz").add_argument("folder", type=Path)
    un = sub.add_parser("unpack", help="cells.jsonl.gz → DEST/seed*/*.json")
    un.add_argument("folder", type=Path)
    un.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    print(pack(args.folder) if args.action == "pack" else unpack(args.folder, args.dest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
