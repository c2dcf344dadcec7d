"""``mmseg models ...`` against a loopback server, with a temporary manifest and cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from MultiModalSegLib.cli import main
from MultiModalSegLib.inference import Segmenter
from MultiModalSegLib.io import Volume
from MultiModalSegLib.model_zoo import installed_path
from Testing.library.model_server import (
    SHIPPED_BUNDLE,
    ModelServer,
    bundle_version,
    closed_port,
    manifest_entry,
    write_manifest,
)

DATA = SHIPPED_BUNDLE.read_bytes()
PATH = "/m/abdomen-ummkd-1.0.0.zip"


@pytest.fixture()
def server():
    with ModelServer({PATH: DATA}) as s:
        yield s


def models(*args: str) -> list[str]:
    return ["models", *args]


def test_list_download_show_verify_export_remove(server, tmp_path, capsys):
    manifest = write_manifest(tmp_path / "Models.json", [manifest_entry("abdomen-ummkd", server.url(PATH), DATA)])
    cache = tmp_path / "cache"
    opts = ["--manifest", str(manifest), "--cache", str(cache)]

    assert main(models("list", *opts)) == 0
    out = capsys.readouterr().out
    assert "abdomen-ummkd" in out and "downloadable" in out and "5.3 MB" in out

    assert main(models("download", "abdomen-ummkd", *opts)) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"abdomen-ummkd: {cache / 'abdomen-ummkd-1.0.0.zip'}"
    assert "100.0% 5.3 MB / 5.3 MB" in captured.err and "[" + "#" * 30 + "]" in captured.err

    assert main(models("list", "--json", *opts)) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["state"] == "installed" and row["installed_version"] == "1.0.0" and row["url"] == server.url(PATH)

    assert main(models("show", "abdomen-ummkd", *opts)) == 0
    card = capsys.readouterr().out
    assert card.startswith("# abdomen-ummkd 1.0.0") and "## Metrics" in card and "validation dice" in card

    assert main(models("verify", *opts)) == 0
    assert "abdomen-ummkd: OK sha256 OK" in capsys.readouterr().out

    assert main(models("export", "abdomen-ummkd", str(tmp_path / "copy.zip"), *opts)) == 0
    assert (tmp_path / "copy.zip").read_bytes() == DATA
    capsys.readouterr()

    assert main(models("remove", "abdomen-ummkd", *opts)) == 0
    assert "removed" in capsys.readouterr().out and not (cache / "abdomen-ummkd-1.0.0.zip").exists()
    assert main(models("verify", "abdomen-ummkd", *opts)) == 1


def test_download_json_progress(server, tmp_path, capsys):
    manifest = write_manifest(tmp_path / "Models.json", [manifest_entry("abdomen-ummkd", server.url(PATH), DATA)])
    assert main(models("download", "abdomen-ummkd", "--progress", "--manifest", str(manifest), "--cache", str(tmp_path))) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]  # JSON only on stdout
    assert lines[0]["done"] == 0 and lines[-2] == {"done": len(DATA), "total": len(DATA), "fraction": 1.0}
    assert lines[-1] == {"name": "abdomen-ummkd", "path": str(tmp_path / "abdomen-ummkd-1.0.0.zip")}


def test_list_wraps_long_descriptions_without_cutting_words(tmp_path, capsys, monkeypatch):
    description = " ".join(f"word{i:02d}" for i in range(40)) + " end-of-description."
    entry = {**manifest_entry("abdomen-ummkd", "http://127.0.0.1:9/m.zip", DATA), "description": description}
    manifest = write_manifest(tmp_path / "Models.json", [entry])
    monkeypatch.setenv("COLUMNS", "90")
    assert main(models("list", "--manifest", str(manifest), "--cache", str(tmp_path / "c"))) == 0
    lines = capsys.readouterr().out.splitlines()
    table = lines[1:-1]  # header, rows, then "* default model"
    assert len(table) > 1 and all(len(line) <= 90 for line in lines)
    column = lines[0].index("DESCRIPTION")
    assert all(line[:column].strip() == "" for line in table[1:])  # continuation lines align under the column
    assert " ".join(line[column:].strip() for line in table) == description


def test_offline_import_then_segment_with_no_network(tmp_path, monkeypatch, capsys):
    url = f"http://127.0.0.1:{closed_port()}{PATH}"
    manifest = write_manifest(tmp_path / "Models.json", [manifest_entry("abdomen-ummkd", url, DATA)])
    monkeypatch.setenv("MMSEG_MODELS_MANIFEST", str(manifest))
    monkeypatch.setenv("MMSEG_MODELS_CACHE", str(tmp_path / "cache"))

    assert main(models("download", "abdomen-ummkd")) == 1
    err = capsys.readouterr().err
    assert err.startswith("mmseg models: error: Model 'abdomen-ummkd' cannot be downloaded from " + url)
    assert "`mmseg models import FILE`" in err

    hand_copy = tmp_path / "from-usb.zip"
    hand_copy.write_bytes(DATA)
    assert main(models("import", str(hand_copy))) == 0
    assert "abdomen-ummkd 1.0.0: sha256 verified" in capsys.readouterr().out

    # the model loads by name, with no network, and segments (a small CT volume keeps the test fast)
    segmenter = Segmenter("abdomen-ummkd", device="cpu")
    assert segmenter.bundle.path == tmp_path / "cache" / "abdomen-ummkd-1.0.0.zip"
    ct = np.full((24, 40, 40), -1000.0, dtype=np.float32)
    ct[4:20, 8:32, 8:32] = 60.0
    result = segmenter.segment(Volume(ct, (3.0, 3.0, 3.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)), "CT")
    assert result.labels.array.shape == ct.shape and result.modality == "CT"


def test_import_of_wrong_file_is_an_error(tmp_path, capsys):
    manifest = write_manifest(tmp_path / "Models.json", [manifest_entry("other", "https://x.org/o.zip", b"o")])
    assert main(models("import", str(SHIPPED_BUNDLE), "--manifest", str(manifest), "--cache", str(tmp_path))) == 1
    assert "matches no model of the models manifest" in capsys.readouterr().err


def test_import_explains_a_name_clash_as_one(tmp_path, capsys):
    """A model made elsewhere under a manifest model's name (same name, other weights or version) is a
    name clash, said as one, not a damaged copy to fetch again."""
    manifest = write_manifest(tmp_path / "Models.json", [manifest_entry("abdomen-ummkd", "https://x.org/a.zip", DATA)])
    other = tmp_path / "mine.zip"
    bundle_version(SHIPPED_BUNDLE, other, "1.1.0")
    assert main(models("import", str(other), "--manifest", str(manifest), "--cache", str(tmp_path / "cache"))) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(a name clash, not a damaged file: its weights are intact" in err
    assert "version 1.1.0" in err and "--model PATH" in err and "fetch" not in err.lower()


def test_invalid_manifest_entry_is_an_error(tmp_path, capsys):
    bad = manifest_entry("bad", "http://example.org/b.zip", DATA)
    manifest = write_manifest(tmp_path / "Models.json", [bad])
    assert main(models("list", "--manifest", str(manifest))) == 1
    err = capsys.readouterr().err
    assert "model entry 0 ('bad'): field 'url' is invalid" in err and "fix the manifest" in err


def test_combine_makes_an_ensemble_and_refuses_with_one_line(tiny_bundle, tmp_path, capsys):
    """``mmseg models combine``: members by path (each with the unverified warning a path gets) or by manifest
    name; a manifest model's name, or members of different networks, are one error and nothing is written."""
    from MultiModalSegLib.bundle import load_bundle

    out = tmp_path / "pair.zip"
    assert main(models("combine", str(tiny_bundle), str(tiny_bundle), "-o", str(out), "--name", "tiny-pair",
                       "--version", "1.0.0")) == 0
    captured = capsys.readouterr()
    assert captured.err.count("is unverified") == 2 and "tiny-pair 1.0.0, an ensemble of tiny 0.1.0, tiny 0.1.0" in captured.out
    pair = load_bundle(out)
    assert len(pair.metadata["members"]) == 2 and pair.metadata["description"].startswith("An ensemble of 2 networks")
    assert main(models("combine", str(tiny_bundle), str(tiny_bundle), "-o", str(tmp_path / "a"), "--name",
                       "abdomen-ummkd-synth", "--version", "9.0.0")) == 1
    assert "--name abdomen-ummkd-synth: a model of the models manifest has this name" in capsys.readouterr().err
    assert main(models("combine", "abdomen-ummkd-synth", str(tiny_bundle), "-o", str(tmp_path / "b"), "--name", "x",
                       "--version", "1.0.0")) == 1
    err = capsys.readouterr().err
    default_file = installed_path("abdomen-ummkd-synth").name  # the shipped default, an ensemble bundle
    assert f"{default_file} is itself an ensemble; give its members instead" in err.splitlines()[-1]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert main(models("combine", str(tiny_bundle), str(tiny_bundle), "-o", str(out), "--name", "tiny-pair",
                       "--version", "1.0.0")) == 1
    assert "already exists" in capsys.readouterr().err
