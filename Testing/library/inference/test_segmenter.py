import dataclasses
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import REAL_CT, REAL_MR, real_mr_crop
from scipy import ndimage

from MultiModalSegLib.data.phantoms import generate_phantom
from MultiModalSegLib.errors import BundleError, InputError
from MultiModalSegLib.inference import Segmentation, Segmenter, keep_largest_component
from MultiModalSegLib.inference.segmenter import window_size
from MultiModalSegLib.io import Volume, read_image
from MultiModalSegLib.labels import LabelInfo
from MultiModalSegLib.preprocessing import resample_to_spacing


def assert_same_geometry(out: Volume, ref: Volume) -> None:
    assert out.array.shape == ref.array.shape
    assert out.spacing == ref.spacing
    assert out.origin == ref.origin
    assert out.direction == ref.direction


@pytest.fixture(scope="module")
def segmenter(tiny_bundle):
    return Segmenter(tiny_bundle, device="cpu")


@pytest.mark.parametrize("path", [REAL_CT, REAL_MR], ids=["ct", "mr"])
def test_real_scan_comes_back_on_its_own_grid(segmenter, path):
    image = read_image(path)
    seg = segmenter.segment(image, "auto")
    assert_same_geometry(seg.labels, image)
    assert seg.labels.array.dtype == np.uint8
    assert seg.modality == ("CT" if "ct" in path.parent.name else "MR")


def oblique(volume: Volume, spacing=(1.3, 0.9, 4.5)) -> Volume:
    """The phantom on an oblique, anisotropic grid (rotated ~25 and ~15 degrees)."""
    rot = sitk.Euler3DTransform()
    rot.SetRotation(0.26, 0.0, 0.44)
    direction = tuple(np.asarray(rot.GetMatrix()).tolist())
    src = volume.to_sitk()
    size = [int(n * s / t) for n, s, t in zip(src.GetSize(), src.GetSpacing(), spacing, strict=True)]
    center = src.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in src.GetSize()])
    ref = sitk.Image(size, sitk.sitkFloat32)
    ref.SetSpacing(spacing)
    ref.SetDirection(direction)
    half = np.asarray(direction).reshape(3, 3) @ (np.asarray(size) - 1) * np.asarray(spacing) / 2
    ref.SetOrigin(tuple(np.asarray(center) - half))
    out = sitk.Resample(src, ref, sitk.Transform(), sitk.sitkLinear, -1000.0, sitk.sitkFloat32)
    return Volume.from_sitk(out)


def test_oblique_anisotropic_volume_round_trip(segmenter):
    image, _ = generate_phantom("CT", 5)
    tilted = oblique(image)
    assert not np.allclose(np.asarray(tilted.direction).reshape(3, 3), np.eye(3))
    seg = segmenter.segment(tilted, "CT", probabilities=True)
    assert_same_geometry(seg.labels, tilted)
    assert seg.probabilities.shape == (5, *tilted.array.shape)
    np.testing.assert_allclose(seg.probabilities.sum(0), 1.0, atol=1e-3)


def test_modality_checks(segmenter):
    image = read_image(REAL_CT)
    with pytest.raises(InputError, match="unknown modality"):
        segmenter.segment(image, "PET")
    seg = segmenter.segment(image, "mr")  # the user may override detection, and is told it disagrees
    assert seg.modality == "MR" and seg.modality_reason == "given by the user"
    assert seg.detected_modality == "CT" and "air in HU" in seg.detected_reason and seg.modality_disagrees
    assert seg.warnings()[0].startswith("the modality was given as MR but the image looks like CT")
    auto = segmenter.segment(image, "auto")
    assert auto.detected_modality == auto.modality == "CT" and not auto.modality_disagrees


def test_all_empty_and_its_warning():
    labels = np.zeros((4, 5, 6), np.uint8)
    info = [LabelInfo(1, "liver", (1, 2, 3)), LabelInfo(2, "spleen", (4, 5, 6))]

    def result(array, detected=None):
        volume = Volume(array, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
        return Segmentation(volume, info, "CT", "given by the user", None, 0.1, detected, "why")

    empty = result(labels)
    assert empty.all_empty and not empty.modality_disagrees
    assert empty.warnings() == [
        "no organ was found: every label (liver, spleen) is empty; check that the image is a CT scan of the "
        "region the model was trained on"
    ]
    labels[1, 1, 1] = 2
    assert not result(labels).all_empty and result(labels).warnings() == []
    labels[1, 1, 1] = 7  # a value that is no organ's
    both = result(labels, detected="MR")
    assert both.all_empty and both.modality_disagrees
    assert both.warnings()[1].endswith("the modality is the likely cause")


def test_fast_quality_and_unknown_quality(tiny_bundle):
    normal = Segmenter(tiny_bundle, device="cpu")
    fast = Segmenter(tiny_bundle, device="cpu", quality="fast")
    # fast keeps the model's voxel size (the network saw no other) and drops the window overlap
    assert fast.spacing == normal.spacing == [6.0, 6.0, 6.0]
    assert (fast.overlap, fast.mode) == (0.0, "constant") and normal.overlap == 0.5
    with pytest.raises(InputError, match="unknown quality"):
        Segmenter(tiny_bundle, device="cpu", quality="best")


def test_cpu_convolutions_run_channels_last_and_label_as_the_default_layout(tiny_bundle):
    volume = real_mr_crop()
    default = Segmenter(device="cpu", amp=False, cpu_channels_last=False)
    channels = Segmenter(device="cpu", amp=False)
    assert channels.channels_last and not default.channels_last
    # a batch-normalised network keeps the default layout (see MultiModalSegLib.device.cpu_channels_last)
    assert not Segmenter(tiny_bundle, device="cpu").channels_last
    kernels = [p for p in channels.net.parameters() if p.dim() == 5]
    assert kernels and all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in kernels)
    assert not all(p.is_contiguous() for p in kernels)
    assert all(p.is_contiguous() for p in default.net.parameters())
    a, b = (s.segment(volume, "MR", probabilities=True) for s in (default, channels))
    # float32 both ways, summed in another order: the probabilities agree to rounding, the labels almost everywhere
    assert np.abs(a.probabilities - b.probabilities).max() < 1e-3
    assert np.mean(a.labels.array == b.labels.array) > 0.999


def test_cuda_request_without_cuda_is_one_clear_error(tiny_bundle):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InputError, match="no CUDA GPU"):
        Segmenter(tiny_bundle, device="cuda")


def test_bundle_whose_weights_disagree_with_its_labels(tiny_bundle, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle, bad)
    meta = json.loads((bad / "metadata.json").read_text())
    meta["labels"] = meta["labels"][:3]
    meta["network"]["params"]["out_channels"] = 4
    (bad / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="do not fit the network"):
        Segmenter(bad, device="cpu")


def test_tampered_weights_are_refused(tiny_bundle, tmp_path):
    bad = tmp_path / "tampered"
    shutil.copytree(tiny_bundle, bad)
    data = bytearray((bad / "model.pt").read_bytes())
    data[-20] ^= 0xFF
    (bad / "model.pt").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256|altered|corrupt"):
        Segmenter(bad, device="cpu")


def test_keep_largest_component():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[1:4, 1:4, 1:4] = 1
    labels[7:9, 7:9, 7:9] = 1  # a smaller second piece
    labels[6, 1, 1] = 2
    out = keep_largest_component(labels, [1, 2])
    assert (out == 1).sum() == 27 and (out == 2).sum() == 1


def test_fast_windows_grow_up_to_the_volume():
    patch = [48, 64, 64]
    assert window_size(patch, (200, 300, 300), 1) == patch
    # per axis the side (patch to twice the patch) whose tiles compute the fewest voxels:
    # 200 -> 3 x 80 (240 voxels, as 5 x 48 but fewer windows); 300 -> 4 x 80; 111 -> 2 x 64; 100 -> 112
    assert window_size(patch, (200, 300, 300), 2) == [80, 80, 80]
    assert window_size(patch, (111, 100, 120), 2) == [64, 112, 128]
    assert window_size(patch, (40, 100, 40), 2) == [48, 112, 64]  # smaller than the patch: the patch


def test_fast_tiles_with_patch_windows_unless_that_saves_too_little(tiny_bundle, monkeypatch):
    """Fast: training-patch windows side by side, constant blending; on a volume where that would
    not halve the computed voxels (a 20-slice MR), the bundle's own overlapping windows."""
    from MultiModalSegLib.inference.sliding_window import count_windows

    fast = Segmenter(tiny_bundle, device="cpu", quality="fast")
    normal = Segmenter(tiny_bundle, device="cpu", quality="normal")
    patch = list(fast.patch_size)
    big = tuple(4 * p for p in patch)  # overlap 0.5: 7 windows per axis against 4
    assert count_windows(big, patch, 0.0) == 64 and count_windows(big, patch, 0.5) == 343
    assert fast.sliding_window(big) == (patch, 0.0, "constant", fast.sw_batch_size)
    assert normal.sliding_window(big) == (patch, *normal.bundle_window)
    small = (patch[0] // 2, patch[1] + 2, 2 * patch[2] + 2)  # fast 1 x 2 x 3 windows, normal 1 x 2 x 4
    assert count_windows(small, patch, 0.0) == 6 and count_windows(small, patch, 0.5) == 8
    assert fast.sliding_window(small) == (patch, *normal.bundle_window) == normal.sliding_window(small)
    # what segment() runs is what sliding_window() says
    seen = []
    monkeypatch.setattr("MultiModalSegLib.inference.segmenter.predict_logits",
                        lambda net, image, modality, window, **kw: seen.append((window, kw["overlap"], kw["mode"])) or
                        torch.zeros((1, len(fast.label_info) + 1, *image.shape[2:])))
    image = read_image(REAL_CT)
    fast.segment(image, "CT")
    _, _, tensor = fast.network_input(image, "CT")
    assert seen == [fast.sliding_window(tuple(tensor.shape[2:]))[:3]]


def test_a_quality_may_run_the_network_on_a_coarser_grid(tiny_bundle):
    from MultiModalSegLib.inference import Quality

    image = read_image(REAL_CT)
    coarse = Segmenter(tiny_bundle, device="cpu", quality=Quality(overlap=0.0, spacing_scale=2.0))
    plain = Segmenter(tiny_bundle, device="cpu", quality=Quality(overlap=0.0))
    assert coarse.quality.network_spacing(coarse.spacing) == [12.0, 12.0, 12.0]
    coarse_grid, _, _ = coarse.network_input(image, "CT")
    plain_grid, _, _ = plain.network_input(image, "CT")
    assert coarse_grid.spacing == (12.0, 12.0, 12.0) and plain_grid.spacing == (6.0, 6.0, 6.0)
    for c, p in zip(coarse_grid.array.shape, plain_grid.array.shape, strict=True):
        assert abs(c - p / 2) <= 1
    seg = coarse.segment(image, "CT")
    assert_same_geometry(seg.labels, image)  # still returned on the input's own grid


def test_fast_runs_the_network_in_bfloat16_where_the_cpu_computes_it(tiny_bundle, monkeypatch):
    """fast asks for CPU bfloat16, normal never; on a processor without it (or with it emulated here)
    the labels barely move: the windows are blended in float32."""
    import MultiModalSegLib.device as device
    from MultiModalSegLib.inference import QUALITIES

    assert QUALITIES["fast"].cpu_bfloat16 and not QUALITIES["normal"].cpu_bfloat16
    dtypes = []

    def spy(net):
        original = net.forward

        def forward(x, modality=None):
            out = original(x, modality)
            dtypes.append(out.dtype)
            return out
        net.forward = forward

    image = read_image(REAL_CT)
    monkeypatch.setattr(device, "cpu_bfloat16_native", lambda: True)  # emulated where the CPU lacks it: slower, same numbers
    fast = Segmenter(tiny_bundle, device="cpu", quality="fast")
    plain = Segmenter(tiny_bundle, device="cpu", quality=dataclasses.replace(QUALITIES["fast"], cpu_bfloat16=False))
    spy(fast.net)
    low = fast.segment(image, "CT").labels.array
    assert dtypes and set(dtypes) == {torch.bfloat16}
    spy(plain.net)
    dtypes.clear()
    full = plain.segment(image, "CT").labels.array
    assert set(dtypes) == {torch.float32}
    assert np.mean(low == full) > 0.98
    monkeypatch.setattr(device, "cpu_bfloat16_native", lambda: False)
    dtypes.clear()
    spy(fast.net)
    fast.segment(image, "CT")
    assert set(dtypes) == {torch.float32}


def test_normal_quality_labels_follow_the_probabilities_on_a_finer_grid(tiny_bundle, monkeypatch):
    """On an input grid finer than the model's (the 3 mm sample CT, a 6 mm model), normal quality
    takes the labels near the organs from the probabilities resampled linearly: they agree with the
    argmax of the probabilities returned on the input grid, where copying the model's labels to the
    nearest voxels does not. On the model's own grid, and at fast quality, labels stay the copy."""
    from MultiModalSegLib.inference import segmenter as module
    from MultiModalSegLib.inference.segmenter import QUALITIES

    def bright_is_liver(net, image, modality, window, **kwargs):  # a known network: smooth logits
        logits = torch.zeros((1, 5, *image.shape[2:]))
        logits[:, 1] = 12.0 * (image[:, 0] - 0.55)
        return logits

    monkeypatch.setattr(module, "predict_logits", bright_is_liver)
    image = read_image(REAL_CT)
    whole = {"device": "cpu", "largest_component": False}  # every piece: compared with the probabilities' argmax
    smooth = Segmenter(tiny_bundle, **whole).segment(image, "CT", probabilities=True)
    copied = Segmenter(tiny_bundle, **whole, quality=dataclasses.replace(QUALITIES["normal"], smooth_labels=False))
    nearest = copied.segment(image, "CT")
    organ = smooth.probabilities.argmax(0) == 1
    assert organ.sum() > 1000

    def dice(a):
        return 2 * (a & organ).sum() / (a.sum() + organ.sum())

    liver_smooth, liver_nearest = smooth.labels.array == 1, nearest.labels.array == 1
    assert not np.array_equal(liver_smooth, liver_nearest)
    assert dice(liver_smooth) > 0.99 and dice(liver_smooth) > dice(liver_nearest) + 0.1
    fast = Segmenter(tiny_bundle, device="cpu", quality="fast")
    assert not fast.quality.smooth_labels
    coarse = resample_to_spacing(image, [6.0, 6.0, 6.0])  # the model's grid: nothing to smooth
    np.testing.assert_array_equal(Segmenter(tiny_bundle, **whole).segment(coarse, "CT").labels.array,
                                  copied.segment(coarse, "CT").labels.array)


def test_keep_largest_component_works_within_each_organ_box():
    rng = np.random.default_rng(0)
    labels = (rng.random((30, 40, 50)) < 0.02).astype(np.uint8) * 3  # scattered single voxels of 3
    labels[5:15, 10:30, 10:20] = 1
    labels[20:22, 2:4, 40:45] = 1
    out = keep_largest_component(labels, [1, 2, 3])
    assert (out == 1).sum() == 10 * 20 * 10 and (out == 2).sum() == 0
    cube = np.ones((3, 3, 3), bool)
    _, pieces = ndimage.label(out == 3, structure=cube)
    before, _ = ndimage.label(labels == 3, structure=cube)
    assert pieces == 1 and (out == 3).sum() == np.bincount(before.ravel())[1:].max()


def test_rival_pieces_are_those_nearly_as_large_as_the_piece_kept():
    """A dropped piece of at least half the kept one's volume and 5 ml is reported; a smaller one is not."""
    from MultiModalSegLib.inference.segmenter import rival_pieces

    info = [LabelInfo(1, "liver", (1, 2, 3)), LabelInfo(2, "spleen", (4, 5, 6)), LabelInfo(3, "kidney_left", (7, 8, 9))]
    labels = np.zeros((30, 30, 30), np.uint8)
    labels[0:10, 0:10, 0:10] = 2  # spleen: 1000 voxels of 0.02 ml = 20 ml ...
    labels[20:26, 20:30, 20:30] = 2  # ... and 600 voxels apart, 12 ml: 0.6 of it
    labels[0:10, 20:30, 0:10] = 1  # liver: 20 ml and 6 ml (0.3 of it)
    labels[20:23, 0:10, 20:30] = 1
    labels[12:17, 12:17, 0:6] = 3  # kidney: 3 ml and 2.4 ml (0.8 of it, under 5 ml)
    labels[12:17, 12:16, 20:26] = 3
    spacing = (0.2 * 10, 1.0, 10.0)  # 0.02 ml a voxel
    assert rival_pieces(labels, info, spacing) == {"spleen": (20.0, 12.0)}
    assert rival_pieces(np.zeros_like(labels), info, spacing) == {}

    volume = Volume(keep_largest_component(labels, [1, 2, 3]), spacing, (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    seg = Segmentation(volume, info, "CT", "given by the user", None, 0.1, rival_pieces={"spleen": (20.0, 12.0)})
    assert seg.warnings() == ["spleen: a separate piece of about 12 mL was dropped beside the piece kept (about 20 mL; each "
                              "organ keeps its largest piece); check that the piece kept is the spleen and not a neighbouring structure"]


def test_the_segmenter_reports_a_rival_piece_it_dropped(tiny_bundle, monkeypatch):
    """Where the network calls two separate places of about one size spleen, the Segmenter keeps the larger
    and says which it dropped (its network patched here to draw exactly that)."""
    import MultiModalSegLib.inference.segmenter as segmenter_module

    def two_spleens(net, image, modality, window, **kwargs):
        logits = torch.zeros((1, 5, *image.shape[2:]))
        logits[:, 0] = 5.0
        z, y, x = image.shape[2:]
        logits[0, 2, : z // 3, : y // 3, : x // 3] = 10.0  # spleen here ...
        logits[0, 2, z - z // 4:, y - y // 3:, x - x // 3:] = 10.0  # ... and there, 3/4 of its size
        return logits

    monkeypatch.setattr(segmenter_module, "predict_logits", two_spleens)
    seg = Segmenter(tiny_bundle, device="cpu").segment(read_image(REAL_CT), "CT")
    assert set(seg.rival_pieces) == {"spleen"}
    kept, dropped = seg.rival_pieces["spleen"]
    assert 0.5 <= dropped / kept <= 1.0 and dropped >= 5.0
    assert any(w.startswith("spleen: a separate piece of") for w in seg.warnings())
    assert Segmenter(tiny_bundle, device="cpu", largest_component=False).segment(read_image(REAL_CT), "CT").rival_pieces == {}
