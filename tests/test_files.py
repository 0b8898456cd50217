"""cdssm.files: the new content appears whole or not at all."""

import json
import os
import stat

import pytest

from cdssm.files import atomic_write, write_json


def test_write_json_round_trip_readable_by_all(tmp_path):
    path = tmp_path / "sub" / "meta.json"
    write_json(str(path), {"a": [1, 2], "b": "é"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": [1, 2], "b": "é"}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert os.listdir(path.parent) == ["meta.json"]


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_text("previous")

    def write(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(str(path), write)
    assert path.read_text() == "previous"
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


def test_suffix_reaches_the_writer(tmp_path):
    seen = []
    atomic_write(str(tmp_path / "fig.png"), lambda tmp: (seen.append(tmp), open(tmp, "w").close()),
                 suffix=".png")
    assert seen[0].endswith(".png") and (tmp_path / "fig.png").is_file()
