"""The real `argusnet` CLI on real photos: enrol, identify, gallery management and bad input (exit 2,
nothing written)."""

import csv
import hashlib
import json
import struct
import zlib
from collections import defaultdict
from pathlib import Path

import pytest

from store import open_store
from store.config import GalleryConfig, LocalStoreConfig
from store.migrate import samples
from tests.conftest import require_data

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def people():
    """identity -> photo paths from deepface's identities.csv, people with at least three photos first."""
    path = require_data("deepface", "identities.csv")
    by_person = defaultdict(list)
    for row in csv.DictReader(path.open()):
        by_person[row["identity"]].append(path.parent / row["file"])
    return sorted(by_person.values(), key=len, reverse=True)


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, people, cli):
    directory = tmp_path_factory.mktemp("g") / "gallery"
    for i, photos in enumerate(people[:2]):
        r = cli("enroll", f"person{i}", *photos[:2], "--gallery", directory)
        assert r.code == 0, r.err
        assert f"enrolled person{i}: 2 face(s)" in r.out
    return directory


def snapshot(directory: Path) -> dict[str, str]:
    if not directory.exists():
        return {}
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()
            and not p.name.endswith(("-wal", "-shm"))}


def test_identify_names_enrolled_people_and_not_strangers(cli, gallery, people):
    for i, photos in enumerate(people[:2]):
        r = cli("identify", photos[2], "--gallery", gallery, "--json")
        assert r.code == 0, r.err
        out = json.loads(r.out)
        assert out["model"] == "dlib_resnet_v1"
        assert [f["name"] for f in out["faces"]] == [f"person{i}"]
        face = out["faces"][0]
        assert {"box", "name", "similarity", "margin"} <= set(face) and len(face["box"]) == 4
    stranger = people[5][0]
    r = cli("identify", stranger, "--gallery", gallery, "--json")
    assert r.code == 0, r.err
    assert [f["name"] for f in json.loads(r.out)["faces"]] == ["unknown"]


def test_identify_text_output_and_group_photo(cli, gallery, data_dir):
    r = cli("identify", data_dir / "facenet-pytorch" / "multiface.jpg", "--gallery", gallery)
    assert r.code == 0, r.err
    assert r.out.count("face ") == 6 and "unknown" in r.out


def test_gallery_list_export_remove(cli, gallery, tmp_path, people):
    r = cli("gallery", "list", "--gallery", gallery, "--json")
    listed = json.loads(r.out)
    assert r.code == 0 and [p["name"] for p in listed["persons"]] == ["person0", "person1"]
    assert all(p["faces"] == 2 for p in listed["persons"])
    out = tmp_path / "export.json"
    assert cli("gallery", "export", out, "--gallery", gallery).code == 0
    assert out.exists() and "person0" in out.read_text()
    copy = tmp_path / "g2"
    assert cli("enroll", "solo", people[3][0], "--gallery", copy).code == 0
    with open_store(LocalStoreConfig(path=copy), GalleryConfig()) as store:  # an operator said "not solo" once
        store.negatives.add("solo", samples(store.persons.faces_of("solo")))
    r = cli("gallery", "remove", "solo", "--gallery", copy)
    assert r.code == 0 and "removed solo: 1 face(s) and 1 negative face(s)" in r.out
    assert json.loads(cli("gallery", "list", "--gallery", copy, "--json").out)["persons"] == []
    with open_store(LocalStoreConfig(path=copy), GalleryConfig()) as store:
        assert store.negatives.counts() == {}
    r = cli("gallery", "remove", "nobody", "--gallery", copy)
    assert r.code == 2 and "nobody" in r.err
    audit = json.loads(cli("audit", "list", "--gallery", copy, "--json").out)["records"]
    assert [(a["action"], a["subject"]) for a in audit] == [("enrol", "solo"), ("remove", "solo")]
    assert b"solo" not in (copy / "audit.jsonl").read_bytes()  # subjects are pseudonymous in the log itself


def png_bomb(path: Path) -> Path:
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
                     + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)))
    return path


@pytest.mark.parametrize("case", ["no_face", "two_faces", "truncated", "not_image", "bomb"])
def test_bad_enrolment_photo_exit_2_and_nothing_written(cli, gallery, tmp_path, data_dir, people, case):
    bad = {
        "no_face": lambda: data_dir / "dlib" / "faces" / "dogs.jpg",
        "two_faces": lambda: data_dir / "deepface" / "couple.jpg",
        "truncated": lambda: _write(tmp_path / "half.jpg", people[0][0].read_bytes()[:50_000]),
        "not_image": lambda: _write(tmp_path / "notes.jpg", b"just some text, not a photo\n" * 50),
        "bomb": lambda: png_bomb(tmp_path / "bomb.png"),
    }[case]()
    expected = {"no_face": "no face", "two_faces": "2 faces", "truncated": "truncated",
                "not_image": "not an image", "bomb": "decompression bomb"}[case]
    before = snapshot(gallery)
    r = cli("enroll", "intruder", people[2][0], bad, "--gallery", gallery)
    assert r.code == 2, r.err
    assert expected in r.err and "nothing was enrolled" in r.err
    assert snapshot(gallery) == before
    fresh = tmp_path / "fresh-gallery"
    r = cli("enroll", "intruder", bad, "--gallery", fresh)
    assert r.code == 2 and not fresh.exists()


def test_skip_bad_enrols_the_good_photos(cli, tmp_path, people, data_dir):
    directory = tmp_path / "g"
    r = cli("enroll", "someone", people[0][0], data_dir / "dlib" / "faces" / "dogs.jpg", "--gallery", directory,
            "--skip-bad", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert len(out["enrolled"]) == 1 and len(out["refused"]) == 1


def test_unknown_gallery_directory(cli, tmp_path, people):
    for args in (("identify", people[0][0]), ("gallery", "list")):
        r = cli(*args, "--gallery", tmp_path / "does-not-exist")
        assert r.code == 2
        assert "does-not-exist" in r.err
    not_a_gallery = tmp_path / "photos"
    not_a_gallery.mkdir()
    (not_a_gallery / "x.txt").write_text("hello")
    r = cli("enroll", "x", people[0][0], "--gallery", not_a_gallery)
    assert r.code == 2 and (not_a_gallery / "x.txt").read_text() == "hello"
    assert sorted(p.name for p in not_a_gallery.iterdir()) == ["x.txt"]


def test_a_face_already_enrolled_as_another_person_is_refused_unless_allowed(cli, tmp_path, people):
    directory = tmp_path / "g"
    photo = people[0][0]
    assert cli("enroll", "alice", photo, "--gallery", directory).code == 0
    before = snapshot(directory)
    r = cli("enroll", "bob", people[1][0], photo, "--gallery", directory)
    assert r.code == 2, r.err
    assert "'alice'" in r.err and "similarity 1.000" in r.err and "nothing was enrolled" in r.err, r.err
    assert "Traceback" not in r.err and str(photo) in r.err and str(people[1][0]) not in r.err
    assert snapshot(directory) == before
    r = cli("enroll", "alice", people[0][1], "--gallery", directory)  # another photo of the same person is fine
    assert r.code == 0, r.err
    r = cli("enroll", "bob", photo, "--gallery", directory, "--allow-duplicate", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["persons"] == 2 and [d["person"] for d in out["duplicates"]] == ["alice"]


def test_config_is_taken_after_the_subcommand_too_and_that_value_wins(cli, tmp_path):
    r = cli("up", "--help")
    assert r.code == 0 and "--config FILE" in r.out
    good, missing = tmp_path / "good.yaml", tmp_path / "missing.yaml"
    good.write_text("up: {workers: 1}\n")
    r = cli("--config", missing, "up", "--config", good, "--duration", "0")
    assert r.code == 2 and "--duration must be > 0" in r.err, r.err
    for args in (("--config", good, "up", "--config", missing), ("gallery", "list", "--config", missing)):
        r = cli(*args)
        assert r.code == 2 and f"configuration file not found: {missing}" in r.err, r.err


def test_bad_config_value_is_exit_2(cli, people, gallery):
    r = cli("identify", people[0][0], "--gallery", gallery, env={"ARGUSNET__DETECTOR__MAX_SIDE": "1"})
    assert r.code == 2 and "detector.max_side = 1" in r.err


def test_usage_error_is_exit_2(cli):
    r = cli("enroll")
    assert r.code == 2 and "usage" in r.err


def test_demo(cli):
    r = cli("demo")
    assert r.code == 0, r.err
    assert "identified: Eileen Collins" in r.out


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
