"""The photo split of ../shared/data/sharp: which photos train, which are held out, which are dropped.

The split is the committed file ``scripts/photo_split.txt`` (one ``ROLE PATH`` line per photo
that is not a training photo; every other image under ``sharp/`` trains), so it never drifts
when photos are added. How it was made (``--propose`` prints it again):

* ``heldout``, v1: the 6 photos of ``scripts/make_samples.py`` ``HELD_OUT`` (the shipped
  model's validation set and the sample images).
* ``heldout``, v2: in each of ``kodak/`` and ``wikipedia/`` the ``round(15 %)`` photos with the
  smallest ``sha256("gkm-holdout-v2:" + path)`` (excluded photos not counted): a stable rule that
  depends only on the names.
* ``excluded``: not photographs of 3-D scenes (see ``EXCLUDED`` below); used nowhere.

Usage::

    .venv/bin/python scripts/split_photos.py --check            # the file matches the rule and the folder
    .venv/bin/python scripts/split_photos.py --link runs/data   # symlink folders (prepare_data.sh)
    .venv/bin/python scripts/split_photos.py --propose          # print the file the rule gives
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_samples import HELD_OUT

SPLIT_FILE = Path(__file__).resolve().parent / "photo_split.txt"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})
ROLES = ("heldout", "excluded")
#: Folders whose photos arrived with issue 12; 15 % of each is held out by hash.
V2_FOLDERS = ("kodak", "wikipedia")
V2_FRACTION = 0.15
V2_SALT = "gkm-holdout-v2:"
#: Not photographs of 3-D scenes (wikipedia/README.md: "keep or drop them by their content").
#: The README's numbering is off by one from 031 on, so the reasons name what the files show.
EXCLUDED = {
    "wikipedia/007.jpg": "an engraving (line art), not a photograph",
    "wikipedia/015.jpg": "a satellite image of a hurricane",
    "wikipedia/019.jpg": "a Hubble space telescope image",
}


def list_photos(sharp: Path) -> list[str]:
    """Image files under ``sharp`` as sorted POSIX paths relative to it (hidden files skipped)."""
    found = []
    for f in sorted(sharp.rglob("*")):
        rel = f.relative_to(sharp)
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not any(p.startswith(".") for p in rel.parts):
            found.append(rel.as_posix())
    return found


def _rank(path: str) -> str:
    return hashlib.sha256((V2_SALT + path).encode()).hexdigest()


def propose(photos: list[str]) -> dict[str, str]:
    """The split the rule gives for these photos: {path: role} for every non-training photo."""
    roles = {p: "heldout" for p in HELD_OUT}
    roles.update({p: "excluded" for p in EXCLUDED})
    for folder in V2_FOLDERS:
        pool = sorted((p for p in photos if p.startswith(folder + "/") and p not in roles), key=_rank)
        for p in pool[: round(V2_FRACTION * len(pool))]:
            roles[p] = "heldout"
    return roles


def render(roles: dict[str, str]) -> str:
    """The text of ``photo_split.txt`` for a {path: role} map."""
    lines = [
        "# Photos of ../shared/data/sharp that do NOT train (every other image there does).",
        "# ROLE PATH (relative to sharp/). heldout: validation sets and sample images only;",
        "# excluded: used nowhere. Made by scripts/split_photos.py --propose (the rule is in its",
        "# docstring); this file, not the rule, is the split: edit both together.",
    ]
    for role in ROLES:
        for p in sorted(k for k, v in roles.items() if v == role):
            why = f"  # {EXCLUDED[p]}" if p in EXCLUDED else ("  # v1 (make_samples.HELD_OUT)" if p in HELD_OUT else "")
            lines.append(f"{role} {p}{why}")
    return "\n".join(lines) + "\n"


def read_split(path: Path = SPLIT_FILE) -> dict[str, str]:
    """{path: role} from ``photo_split.txt``; a malformed line is an error naming it."""
    roles: dict[str, str] = {}
    for n, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ROLES or parts[1] in roles:
            sys.exit(f"{path}:{n}: expected 'heldout PATH' or 'excluded PATH' (each path once), got {raw!r}")
        roles[parts[1]] = parts[0]
    return roles


def link_split(sharp: Path, data: Path, roles: dict[str, str]) -> dict[str, int]:
    """Make exactly these symlink folders under ``data`` (stale links removed):

    * ``sharp_train``: training photos; ``sharp_heldout_v2``: every held-out photo;
    * ``sharp_heldout``: the 6 v1 photos only, so ``val_synth`` (v1) renders as before.

    Link names are the relative path with '/' -> '_' (the v1 naming). Returns the counts."""
    photos = list_photos(sharp)
    missing = sorted(set(roles) - set(photos))
    if missing:
        sys.exit(f"{SPLIT_FILE.name}: {len(missing)} listed photo(s) not under {sharp}, e.g. {missing[0]}")
    folders = {
        "sharp_train": [p for p in photos if p not in roles],
        "sharp_heldout_v2": [p for p in photos if roles.get(p) == "heldout"],
        "sharp_heldout": [p for p in photos if p in HELD_OUT],
    }
    for name, members in folders.items():
        folder = data / name
        folder.mkdir(parents=True, exist_ok=True)
        want = {p.replace("/", "_"): (sharp / p).resolve() for p in members}
        for entry in folder.iterdir():
            if entry.is_symlink() and (entry.name not in want or Path(os.readlink(entry)) != want[entry.name]):
                entry.unlink()
        for link, target in want.items():
            if not (folder / link).is_symlink():
                (folder / link).symlink_to(target)
    return {k: len(v) for k, v in folders.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sharp", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sharp"
    )
    ap.add_argument("--check", action="store_true", help="Exit 1 when the file differs from the rule's split.")
    ap.add_argument("--propose", action="store_true", help="Print the file the rule gives.")
    ap.add_argument("--link", type=Path, metavar="DATA", help="Write the symlink folders under DATA.")
    args = ap.parse_args()
    photos = list_photos(args.sharp)
    if args.propose:
        sys.stdout.write(render(propose(photos)))
        return
    roles = read_split()
    if args.check:
        rule = propose(photos)
        if rule != roles:
            diff = sorted(set(rule.items()) ^ set(roles.items()))
            sys.exit(f"{SPLIT_FILE}: differs from the rule's split for {len(photos)} photos, e.g. {diff[0]}")
        print(f"{SPLIT_FILE.name}: matches the rule ({len(photos)} photos)")
    if args.link is not None:
        counts = link_split(args.sharp, args.link, roles)
        print(", ".join(f"{k}: {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
