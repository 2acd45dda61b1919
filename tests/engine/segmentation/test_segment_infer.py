"""run_segment: blended sliding windows without seams, streamed output independent of block size, polygons
merged across block borders, cleaning, metric attributes, atomic outputs and refused models.

The models here are real (tiny) torch modules with fixed weights - a 1x1 convolution that turns bright
roofs into high logits, a constant, a 5x5 box filter - given to run_segment as (module, meta), the same
interface load_seg_model returns; one test goes through a real U-Net model file.
"""
from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from torch import nn

from engine.errors import BadInput
from engine.segmentation.infer import blend_weights
from engine.tools.segment import SegmentParams, run_segment
from tests.engine.segmentation.helpers import OutOfMemoryAbove


class Bright(nn.Module):
    """uint8 RGB (B,3,H,W) -> logits: (mean brightness - 128) / 8 through a k x k mean filter (zero padded)."""

    def __init__(self, k: int = 1, const: "float | None" = None):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, k, padding=k // 2)
        with torch.no_grad():
            self.conv.weight.fill_(0.0 if const is not None else 1.0 / (3 * k * k * 8 * 255 / 255))
            self.conv.bias.fill_(const if const is not None else -128.0 / 8)

    def forward(self, x):
        return self.conv(x.float())


META = {"encoder": "test", "bands": [1, 2, 3], "n_bands": 3, "stretch": None, "pixel_size_m": 0.5, "chip": 64}


def write_rgb(path, rgb, crs="EPSG:32630", transform=Affine(0.5, 0, 500000, 0, -0.5, 700000), nodata=None):
    with rasterio.open(path, "w", driver="GTiff", width=rgb.shape[2], height=rgb.shape[1], count=3, dtype="uint8",
                       crs=crs, transform=transform, nodata=nodata) as ds:
        ds.write(rgb)
    return str(path)


def scene(h=200, w=180, seed=0):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(40, 110, size=(3, h, w), dtype=np.uint8)
    rgb[:, 20:50, 30:90] = 220                 # roofs
    rgb[:, 55:75, 58:72] = 200                 # straddles the 64-px block borders
    rgb[:, 120:190, 100:170] = 230
    rgb[:, 140:150, 120:130] = 60              # a 5 m x 5 m courtyard (25 m2): kept as a hole
    rgb[:, 170:172, 110:112] = 60              # a 1 m2 hole: filled
    rgb[:, 100:102, 10:12] = 240               # a 1 m2 speck: dropped
    return rgb


def run(tmp_path, raster, name, net, **kw):
    kw.setdefault("device", "cpu")
    kw.setdefault("precision", "fp32")
    kw.setdefault("overlap", 16)
    meta = {**META, **kw.pop("meta", {})}
    out = tmp_path / f"{name}.gpkg"
    m = run_segment(SegmentParams(raster=raster, model=(net, meta), out=str(out), **kw))
    return m, out


def read(path):
    with rasterio.open(path) as ds:
        return ds.read(1), ds.profile


def test_blend_weights_sum_to_one():
    w = blend_weights(64, 16)
    s = w[48:] + w[:16]                        # ramp-down of one chip + ramp-up of the next
    assert np.allclose(s, 1.0) and w.min() > 0
    assert np.all(blend_weights(64, 0) == 1)


def test_constant_model_gives_constant_probability(tmp_path):
    r = write_rgb(tmp_path / "r.tif", scene())
    _, out = run(tmp_path, r, "c", Bright(const=0.3), probability=True, overlap=16)
    p, prof = read(tmp_path / "c_prob.tif")
    assert np.allclose(p, 1 / (1 + np.exp(-0.3)), atol=1e-6)
    m, prof = read(tmp_path / "c_mask.tif")
    assert (m == 1).all()


def test_local_model_same_probability_whatever_chip_and_block(tmp_path):
    rgb = scene()
    r = write_rgb(tmp_path / "r.tif", rgb)
    net = Bright(k=1)
    ref = torch.sigmoid(net(torch.from_numpy(rgb)[None])).detach().numpy()[0, 0]
    probs = []
    for i, (chip, overlap, block) in enumerate([(64, 16, 32), (128, 32, 1024), (96, 48, 50)]):
        run(tmp_path, r, f"l{i}", net, chip=chip, overlap=overlap, block=block, probability=True)
        probs.append(read(tmp_path / f"l{i}_prob.tif")[0])
    for p in probs:
        assert np.allclose(p, ref, atol=1e-5)


def test_blending_removes_seams_of_naive_tiles(tmp_path):
    """A 5x5 filter sees zero padding at chip edges: naive tiles (overlap 0) are wrong along tile borders,
    blended overlapping chips are nearly exact there."""
    rgb = scene()
    r = write_rgb(tmp_path / "r.tif", rgb)
    net = Bright(k=5)
    ref = torch.sigmoid(net(torch.from_numpy(rgb)[None])).detach().numpy()[0, 0]
    run(tmp_path, r, "naive", net, chip=64, overlap=0, probability=True)
    run(tmp_path, r, "blend", net, chip=64, overlap=16, probability=True)
    naive = read(tmp_path / "naive_prob.tif")[0]
    blend = read(tmp_path / "blend_prob.tif")[0]
    border = np.zeros(ref.shape, bool)         # the naive tile borders (chips at 0, 64, 128)
    for b in (64, 128):
        border[b - 2:b + 2, :] = True
        border[:, b - 2:b + 2] = True
    err_naive = np.abs(naive - ref)[border].max()
    err_blend = np.abs(blend - ref)[border].max()
    assert err_naive > 0.05
    assert err_blend < err_naive / 10
    # anywhere (including the blended chips' own edges, where the ramps are near 0)
    assert np.abs(blend - ref).max() < np.abs(naive - ref).max() / 3


def test_blocks_smaller_than_raster_give_identical_outputs(tmp_path):
    r = write_rgb(tmp_path / "r.tif", scene())
    net = Bright(k=3)
    m1, o1 = run(tmp_path, r, "small", net, block=32, probability=True)
    m2, o2 = run(tmp_path, r, "big", net, block=4096, probability=True)
    assert np.array_equal(read(tmp_path / "small_mask.tif")[0], read(tmp_path / "big_mask.tif")[0])
    assert np.array_equal(read(tmp_path / "small_prob.tif")[0], read(tmp_path / "big_prob.tif")[0])
    a, b = gpd.read_file(o1, layer="buildings"), gpd.read_file(o2, layer="buildings")
    assert len(a) == len(b) == 3
    assert np.allclose(np.sort(a.area), np.sort(b.area))


def test_building_straddling_block_borders_is_one_polygon(tmp_path):
    r = write_rgb(tmp_path / "r.tif", scene())
    _, out = run(tmp_path, r, "s", Bright(), block=64, simplify=0.0, min_area=0.0)
    g = gpd.read_file(out, layer="buildings")
    # rows 55-75 x cols 58-72 crosses the 64-px border both ways: one 20 x 14 px = 10 m x 7 m building
    hit = g[g.intersects(gpd.points_from_xy([500000 + 65 * 0.5], [700000 - 65 * 0.5])[0])]
    assert len(hit) == 1 and hit.iloc[0]["area"] == pytest.approx(70.0)
    assert len(g) == 4                          # three roofs + the speck (min_area 0)
    assert g.geom_type.eq("Polygon").all()


def test_min_area_and_simplify(tmp_path):
    r = write_rgb(tmp_path / "r.tif", scene())
    _, out = run(tmp_path, r, "c", Bright(), min_area=4.0, simplify=0.5)
    g = gpd.read_file(out, layer="buildings")
    assert len(g) == 3                          # the 1 m2 speck is gone
    big = g.loc[g["area"].idxmax()]
    # 35 m x 35 m roof minus the 25 m2 courtyard; the 1 m2 hole is filled
    assert big["area"] == pytest.approx(35 * 35 - 25)
    assert len(big.geometry.interiors) == 1
    assert len(big.geometry.exterior.coords) == 5     # a clean rectangle: 4 corners + closing point


def test_simplify_falls_back_to_the_topology_keeping_simplifier_only_where_needed():
    import shapely

    from engine.segmentation.polygons import simplify_outlines

    # a staircase (a pixel outline of a rotated edge): plain Douglas-Peucker, as shapely gives it
    stairs = shapely.Polygon([(0, 0), (6, 0), (6, 1), (5, 1), (5, 2), (4, 2), (4, 3), (3, 3), (3, 4), (2, 4),
                              (2, 5), (1, 5), (1, 6), (0, 6)])
    # a 1 m x 1 m building at a 2 m tolerance: plain Douglas-Peucker collapses it, the fallback keeps it
    small = shapely.box(10, 10, 11, 11)
    assert shapely.simplify(small, 2.0, preserve_topology=False).is_empty
    out = simplify_outlines(np.array([stairs, small], dtype=object), 2.0)
    assert out[0].equals_exact(shapely.simplify(stairs, 2.0, preserve_topology=False), 0)
    assert len(out[0].exterior.coords) < len(stairs.exterior.coords)
    assert out[1].equals_exact(shapely.simplify(small, 2.0, preserve_topology=True), 0) and out[1].area > 0
    assert shapely.is_valid(out).all()


def test_buildings_in_metres_on_web_mercator(tmp_path):
    """At 60 N a Web Mercator metre is half a ground metre: a 40 x 20 px roof at 0.5 'm' is 10 m x 5 m."""
    from pyproj import Transformer

    x, y = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(9.0, 60.0)   # UTM 32's meridian
    rgb = np.full((3, 64, 96), 50, np.uint8)
    rgb[:, 10:30, 20:60] = 230
    r = write_rgb(tmp_path / "m.tif", rgb, crs="EPSG:3857", transform=Affine(0.5, 0, x, 0, -0.5, y))
    with pytest.raises(BadInput, match="--resample"):       # a model trained on 0.5 m ground pixels: 2x off
        run(tmp_path, r, "wm", Bright(), meta={"ground_pixel_m": 0.5})
    # the same 0.25 m ground pixels the model was trained on are accepted, although the CRS units say 0.5
    _, out = run(tmp_path, r, "wm", Bright(), meta={"ground_pixel_m": 0.25}, min_area=1.0)
    g = gpd.read_file(out, layer="buildings")
    assert len(g) == 1 and g.crs.to_epsg() == 3857
    assert g.iloc[0]["area"] == pytest.approx(50.0, rel=0.02)
    assert g.iloc[0]["orien"] == pytest.approx(0.0, abs=0.5)


def test_outputs_cog_manifest_and_regularize(tmp_path):
    r = write_rgb(tmp_path / "r.tif", scene())
    m, out = run(tmp_path, r, "o", Bright(), regularize=True)
    mask, prof = read(tmp_path / "o_mask.tif")
    with rasterio.open(tmp_path / "o_mask.tif") as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT", "COG") == "COG" or ds.profile["tiled"]
        assert ds.nodata == 255 and ds.crs.to_epsg() == 32630
    assert set(np.unique(mask)) <= {0, 1}
    assert not (tmp_path / "o_prob.tif").exists()
    man = json.loads((tmp_path / "o_manifest.json").read_text())
    assert man["n_buildings"] == m["n_buildings"] == 3 and man["mpx_per_s"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.gpkg", "o_manifest.json", "o_mask.tif", "r.tif"]


def test_no_overwrite_without_flag_and_atomic_on_failure(tmp_path):
    r = write_rgb(tmp_path / "r.tif", scene())
    run(tmp_path, r, "a", Bright())
    before = (tmp_path / "a.gpkg").stat().st_mtime_ns
    with pytest.raises(BadInput, match="already exists"):
        run(tmp_path, r, "a", Bright())
    assert (tmp_path / "a.gpkg").stat().st_mtime_ns == before
    run(tmp_path, r, "a", Bright(), overwrite=True)

    class Broken(Bright):
        def forward(self, x):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run(tmp_path, r, "b", Broken())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gpkg", "a_manifest.json", "a_mask.tif", "r.tif"]


def test_refuses_other_band_count_or_resolution(tmp_path):
    r = write_rgb(tmp_path / "r.tif", scene())
    with pytest.raises(BadInput, match="band"):
        run(tmp_path, r, "x", Bright(), meta={"n_bands": 4, "bands": [1, 2, 3, 4]})
    with pytest.raises(BadInput, match="--resample"):
        run(tmp_path, r, "x", Bright(), meta={"pixel_size_m": 1.0})
    m, _ = run(tmp_path, r, "x", Bright(), meta={"pixel_size_m": 1.0}, resample=True)
    assert (m["width"], m["height"]) == (90, 100) and m["resampled"]
    assert not list(tmp_path.glob("*.part-*"))


def test_with_a_unet_model_file(tmp_path):
    from engine.segmentation.modelfile import save_seg_model
    from engine.segmentation.unet import UNet

    torch.manual_seed(0)
    net = UNet("resnet18", weights="none")
    save_seg_model(tmp_path / "m.pt", net, {**META, "chip": 64})
    r = write_rgb(tmp_path / "r.tif", scene(96, 96))
    m = run_segment(SegmentParams(raster=r, model=str(tmp_path / "m.pt"), out=str(tmp_path / "u.gpkg"),
                                  overlap=16, device="cpu", precision="fp32"))
    assert m["chip"] == 64 and m["model_meta"]["encoder"] == "resnet18"
    assert (tmp_path / "u_mask.tif").exists()


def test_nodata_pixels_are_nodata_in_the_mask_and_have_no_buildings(tmp_path):
    rgb = scene()
    rgb[:, :, :64] = 0                                      # left strip: nodata (the 30:90 roof is cut at col 64)
    r = write_rgb(tmp_path / "r.tif", rgb, nodata=0)
    calls = []
    m = run_segment(SegmentParams(raster=r, model=(Bright(), META), out=str(tmp_path / "n.gpkg"), overlap=16,
                                  device="cpu", precision="fp32", probability=True),
                    progress=lambda *a, **k: calls.append(a[0]))
    mask = read(tmp_path / "n_mask.tif")[0]
    prob = read(tmp_path / "n_prob.tif")[0]
    assert (mask[:, :64] == 255).all() and (prob[:, :64] == -1).all()
    assert set(np.unique(mask[:, 64:])) == {0, 1}
    g = gpd.read_file(tmp_path / "n.gpkg", layer="buildings")
    assert (g.bounds["minx"] >= 500000 + 64 * 0.5 - 1e-6).all()
    assert m["valid_px"] == 200 * (180 - 64)
    assert "segment" in calls and "write" in calls


def test_segment_then_evaluate_on_the_synthetic_city(tmp_path):
    """End to end: the brightness model finds the bright roofs; the buildings layer scores as well as the
    mask, within a few points (polygons simplified, specks dropped)."""
    from engine.segmentation.evaluate import evaluate
    from tests.synthetic import make_city

    city = make_city(tmp_path / "c.tif", zone_grid=(2, 2), zone_px=128, res=0.3)
    city.footprints.to_file(tmp_path / "fp.gpkg")
    run_segment(SegmentParams(raster=str(tmp_path / "c.tif"), model=(Bright(), {**META, "pixel_size_m": 0.3}),
                              out=str(tmp_path / "o.gpkg"), overlap=16, device="cpu", precision="fp32"))
    a = evaluate(tmp_path / "o_mask.tif", tmp_path / "fp.gpkg")
    b = evaluate(tmp_path / "o.gpkg", tmp_path / "fp.gpkg")
    assert 0 < a["iou"] <= 1 and 0 < b["iou"] <= 1 and a["n_truth"] == b["n_truth"] > 0
    assert b["obj_precision"] >= a["obj_precision"]


def test_several_streams_give_the_probabilities_of_one(tmp_path, monkeypatch):
    """On CPU several batches of chips run at once (features.streams); their probabilities are added in the
    chips' order, so the blended rows are those of one batch at a time."""
    from engine.features.streams import intra_op_threads
    from engine.segmentation.infer import Reader, Runner, predict_stream
    from engine.segmentation.unet import UNet

    torch.manual_seed(0)
    net = UNet("resnet18", weights="none")
    reader = Reader(write_rgb(tmp_path / "r.tif", scene()), META, False)
    out = {}
    try:
        for streams in ("1", "2"):
            monkeypatch.setenv("URBANFORM_STREAMS", streams)
            with intra_op_threads(2):                 # make test gives each suite one thread
                runner = Runner(net, torch.device("cpu"), "fp32", 2)
                out[streams] = np.concatenate([p.copy() for _, p, _ in predict_stream(reader, runner, 64, 16)])
    finally:
        reader.close()
    assert out["1"].shape == (200, 180)
    assert np.allclose(out["1"], out["2"], atol=1e-6)


def test_streaming_memory_does_not_grow_with_raster_height(tmp_path):
    """Peak Python/numpy allocations of the streamed inference: a raster 8x taller costs the same."""
    import tracemalloc

    from engine.segmentation.infer import Reader, Runner, predict_stream

    peaks = []
    for h in (128, 1024):
        rgb = np.random.default_rng(0).integers(0, 255, size=(3, h, 160), dtype=np.uint8)
        r = write_rgb(tmp_path / f"h{h}.tif", rgb)
        reader = Reader(r, META, False)
        runner = Runner(Bright(), torch.device("cpu"), "fp32", 8)
        tracemalloc.start()
        n = sum(len(p) for _, p, _ in predict_stream(reader, runner, 64, 16))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        reader.close()
        assert n == h
    # The peak varies by up to one batch of chips with thread timing (the next batch is read while the current
    # one runs). Held for the whole raster, the taller one's probabilities alone would take 160 x 1024 x 4 bytes
    # = 655 kB, more than twice the shorter one's peak (~270 kB).
    assert peaks[1] < peaks[0] * 1.5, peaks


def test_no_buildings_gives_an_empty_polygon_layer(tmp_path):
    import pyogrio

    r = write_rgb(tmp_path / "e.tif", np.full((3, 100, 80), 50, np.uint8))
    m, out = run(tmp_path, r, "e", Bright())
    info = pyogrio.read_info(out, layer="buildings")
    assert m["n_buildings"] == 0 and info["features"] == 0
    assert info["geometry_type"] == "Polygon" and list(info["fields"]) == ["area", "orien"]


def test_uint16_raster_uses_the_models_stretch_and_single_band(tmp_path):
    """The model's recorded stretch maps 0..1000 to 0..255: a roof at 900 (229 after stretch) is found;
    a one-band model reads one band (repeated to RGB inside the reader, as in tiling)."""
    data = np.full((1, 96, 96), 200, np.uint16)
    data[0, 20:60, 30:70] = 900
    with rasterio.open(tmp_path / "u.tif", "w", driver="GTiff", width=96, height=96, count=1, dtype="uint16",
                       crs="EPSG:32630", transform=Affine(0.5, 0, 500000, 0, -0.5, 700000)) as ds:
        ds.write(data)
    m, out = run(tmp_path, str(tmp_path / "u.tif"), "u", Bright(),
                 meta={"bands": [1], "n_bands": 1, "stretch": [[0, 1000]]})
    g = gpd.read_file(out, layer="buildings")
    assert len(g) == 1 and g.iloc[0]["area"] == pytest.approx(20 * 20)


def test_out_of_memory_halves_the_batch_then_gives_a_clear_error():
    from engine.segmentation.infer import Runner

    chips = np.random.default_rng(0).integers(0, 255, (8, 3, 32, 32), dtype=np.uint8)
    expected = Runner(Bright(3), torch.device("cpu"), "fp32", 8)(chips)
    net = OutOfMemoryAbove(Bright(3), limit=3)
    runner = Runner(net, torch.device("cpu"), "fp32", 8)
    got = runner(chips)
    assert runner.batch == 2 and net.sizes[:3] == [8, 4, 2]      # halved until it fits, then kept
    np.testing.assert_allclose(got, expected, atol=1e-6)
    with pytest.raises(BadInput, match="out of memory even with batch 1"):
        Runner(OutOfMemoryAbove(Bright(3), limit=0), torch.device("cpu"), "fp32", 8)(chips)


def test_threshold_defaults_to_the_models_own(tmp_path):
    """A constant probability of sigmoid(0.5) = 0.62: a model that chose 0.7 in training maps nothing by
    default, the flag overrides it, and a model without a threshold (older files) uses 0.5."""
    r = write_rgb(tmp_path / "r.tif", scene())
    net = Bright(const=0.5)
    m, _ = run(tmp_path, r, "own", net, meta={"threshold": 0.7})
    assert m["threshold"] == 0.7 and (read(tmp_path / "own_mask.tif")[0] == 0).all()
    m, _ = run(tmp_path, r, "flag", net, meta={"threshold": 0.7}, threshold=0.6)
    assert m["threshold"] == 0.6 and (read(tmp_path / "flag_mask.tif")[0] == 1).all()
    m, _ = run(tmp_path, r, "old", net)
    assert m["threshold"] == 0.5 and (read(tmp_path / "old_mask.tif")[0] == 1).all()


def test_tta_averages_the_window_and_its_flips(tmp_path):
    """A pointwise model gives the same probabilities with test-time flips; a one-sided 3 x 3 filter (not
    flip-equivariant) gives the mean of the four flipped runs, flipped back."""
    rgb = scene()
    r = write_rgb(tmp_path / "r.tif", rgb)
    run(tmp_path, r, "plain", Bright(k=1), probability=True)
    run(tmp_path, r, "tta", Bright(k=1), probability=True, tta=True)
    assert np.allclose(read(tmp_path / "plain_prob.tif")[0], read(tmp_path / "tta_prob.tif")[0], atol=1e-6)

    corner = Bright(k=3)
    with torch.no_grad():
        corner.conv.weight.zero_()
        corner.conv.weight[0, :, 0, 0] = 1.0 / (3 * 8)     # the pixel up and to the left only
    x = torch.from_numpy(rgb)[None].float()
    with torch.no_grad():
        flips = [(), (3,), (2,), (2, 3)]
        ref = sum(torch.sigmoid(corner(x.flip(f))).flip(f) if f else torch.sigmoid(corner(x))
                  for f in flips)[0, 0].numpy() / 4
    run(tmp_path, r, "one", corner, probability=True, chip=256, overlap=0, tta=True)   # one window: no blending
    got = read(tmp_path / "one_prob.tif")[0]
    assert np.allclose(got, ref, atol=1e-5)
    run(tmp_path, r, "one_plain", corner, probability=True, chip=256, overlap=0)
    assert np.abs(read(tmp_path / "one_plain_prob.tif")[0] - ref).max() > 0.05
