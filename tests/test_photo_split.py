"""The committed photo split (scripts/photo_split.txt): v1 held-out photos stay held out, the
file parses, and where ../shared/data is present it is what the documented rule gives."""

from __future__ import annotations

from pathlib import Path

import pytest

import split_photos  # scripts/ is on the test path (pyproject: [tool.pytest.ini_options] pythonpath)
from make_samples import HELD_OUT, SAMPLES

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

SHARP = SCRIPTS.parent.parent / "shared" / "data" / "sharp"


def test_v1_and_sample_photos_stay_held_out():
    roles = split_photos.read_split()
    assert all(roles.get(p) == "heldout" for p in HELD_OUT)
    assert all(roles.get(src) == "heldout" for src, *_ in SAMPLES)
    held = [p for p, r in roles.items() if r == "heldout"]
    for folder in split_photos.V2_FOLDERS:  # the new folders contribute held-out photos too
        assert any(p.startswith(folder + "/") for p in held)


@pytest.mark.skipif(not SHARP.is_dir(), reason="needs ../shared/data/sharp")
def test_the_file_is_the_rules_split_and_links_are_exact(tmp_path):
    photos = split_photos.list_photos(SHARP)
    assert split_photos.propose(photos) == split_photos.read_split()
    roles = split_photos.read_split()
    (tmp_path / "sharp_train").mkdir()
    (tmp_path / "sharp_train" / "stale.png").symlink_to(SHARP / HELD_OUT[0])  # a leak from an older split
    counts = split_photos.link_split(SHARP, tmp_path, roles)
    train = {p.name for p in (tmp_path / "sharp_train").iterdir()}
    held = {p.name for p in (tmp_path / "sharp_heldout_v2").iterdir()}
    assert "stale.png" not in train and not train & held
    assert counts["sharp_train"] + counts["sharp_heldout_v2"] + sum(r == "excluded" for r in roles.values()) == len(
        photos
    )
    assert {p.name for p in (tmp_path / "sharp_heldout").iterdir()} == {p.replace("/", "_") for p in HELD_OUT}
