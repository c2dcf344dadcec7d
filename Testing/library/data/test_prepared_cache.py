"""A case prepared twice in one process is read once: the same files and settings come from the cache,
a rewritten file or another setting is prepared again, and every caller gets arrays of its own."""

from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
import pytest

from MultiModalSegLib.data import loading
from MultiModalSegLib.data.dataset import Case, load_dataset
from MultiModalSegLib.data.loading import PREPARED, PreparedCache, prepare_case
from MultiModalSegLib.data.phantoms import write_phantom_dataset

SPACING = (6.0, 6.0, 6.0)
VALUES = [1, 2, 3, 4]


@pytest.fixture()
def mr_case(tmp_path) -> Case:
    """An MR phantom in a folder of this test's own, so that no other test's preparation is cached for it."""
    path = write_phantom_dataset(tmp_path / "phantoms", 1, 1)
    return next(c for c in load_dataset(path).cases("training") if c.modality == "MR")


@pytest.fixture()
def reads(monkeypatch) -> list[str]:
    """The image files ``prepare_case`` reads from disk."""
    seen: list[str] = []
    real = loading.read_image
    monkeypatch.setattr(loading, "read_image", lambda path, *a, **k: seen.append(str(path)) or real(path, *a, **k))
    return seen


def _same(a, b) -> bool:
    return (np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label) and a.alternate == b.alternate
            and len(a.passes) == len(b.passes) and all(np.array_equal(p, q) for p, q in zip(a.passes, b.passes, strict=True)))


def test_the_same_case_is_read_once_and_each_caller_owns_its_arrays(mr_case, reads):
    first = prepare_case(mr_case, SPACING, VALUES, fractions=(0.0, 0.5))
    first.image[:] = -1.0  # a caller that changes its arrays in place changes nobody else's
    first.label[:] = 0
    renamed = dataclasses.replace(mr_case, name="renamed", weight=3.0)
    second = prepare_case(renamed, SPACING, VALUES, fractions=(0.0, 0.5))
    assert reads == [str(mr_case.image)]  # the second came from the cache
    assert (second.name, second.weight) == ("renamed", 3.0)  # under the asking case's name and weight
    PREPARED.clear()
    fresh = prepare_case(mr_case, SPACING, VALUES, fractions=(0.0, 0.5))
    assert len(reads) == 2 and _same(second, fresh) and len(fresh.passes) == 1
    assert second.image is not fresh.image and second.image.max() > 0 and second.label.any()


def test_another_setting_or_a_rewritten_file_is_prepared_again(mr_case, reads):
    prepare_case(mr_case, SPACING, VALUES)
    prepare_case(mr_case, (4.0, 4.0, 4.0), VALUES)  # another voxel size
    prepare_case(mr_case, SPACING, VALUES, fractions=(0.0, 1.0))  # another normalisation ensemble
    assert len(reads) == 3
    prepare_case(mr_case, SPACING, VALUES)
    assert len(reads) == 3
    # the same file names, another scan written over them: read again
    other = write_phantom_dataset(mr_case.image.parent.parent / "other", 1, 1, seed=5)
    other_mr = next(c for c in load_dataset(other).cases("training") if c.modality == "MR")
    for src, dst in ((other_mr.image, mr_case.image), (other_mr.label, mr_case.label)):
        stat = os.stat(dst)
        shutil.copy(src, dst)
        os.utime(dst, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old modification time
    again = prepare_case(mr_case, SPACING, VALUES)
    assert len(reads) == 4
    PREPARED.clear()
    assert _same(again, prepare_case(mr_case, SPACING, VALUES))


def test_a_background_only_label_map_warns_every_time(mr_case, tmp_path):
    background = dataclasses.replace(mr_case, label_remap={99: 1})  # no voxel has value 99: all background
    for _ in range(2):
        with pytest.warns(UserWarning, match="only background"):
            prepare_case(background, SPACING, VALUES)


def test_the_least_recently_used_cases_go_first_under_the_byte_limit(mr_case):
    cache = PreparedCache()
    prepared = prepare_case(mr_case, SPACING, VALUES)
    size = prepared.image.nbytes + prepared.label.nbytes
    cache.max_bytes = 2 * size
    for key in ("a", "b"):
        cache.put((key,), prepared, False)
    assert cache.get(("a",)) is not None  # "a" is now the more recently used
    cache.put(("c",), prepared, False)
    assert [k for k in (("a",), ("b",), ("c",)) if cache.get(k) is not None] == [("a",), ("c",)]
    cache.max_bytes = size - 1
    cache.put(("d",), prepared, False)  # larger than the whole cache: not kept
    assert cache.get(("d",)) is None and len(cache) == 2
