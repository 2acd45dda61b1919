"""The ``report`` tool: one self-contained HTML file with a gallery per cluster, opened in headless Chromium."""
from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from tests.engine.helpers import REPO, run_cli

RESULTS = REPO / ".test-results"
EXAMPLES = 4


@pytest.fixture(scope="module")
def kampala_run(kampala_z19, kampala_buildings, tmp_path_factory):
    """A k-means run of the Kampala sample with building statistics, without its quicklook (so that the only
    photographs in the report are the galleries)."""
    out = tmp_path_factory.mktemp("run") / "kampala.gpkg"
    run_cli("cluster", kampala_z19, "--out", out, "--k", 4, "--buildings", kampala_buildings, "--no-quicklook",
            "--cache-dir", out.parent / "cache", check=0)
    return out


@pytest.fixture(scope="module")
def report(kampala_run):
    html = kampala_run.with_name("report.html")
    proc = run_cli("report", kampala_run, "--out", html, "--examples", EXAMPLES, "--progress", "json", check=0)
    stages = [json.loads(line)["stage"] for line in proc.stdout.splitlines()]
    assert {"gallery", "write"} <= set(stages)
    return html


def images_of(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def test_the_report_is_self_contained(report):
    text = report.read_text(encoding="utf-8")
    assert not re.search(r"https?:|file:|url\(|<script|<link", text, re.I)
    sources = re.findall(r'src="([^"]*)"', text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in images_of(text))


def test_the_report_holds_a_gallery_per_cluster_and_the_statistics(report, kampala_run):
    import geopandas as gpd

    text = report.read_text(encoding="utf-8")
    tiles = gpd.read_file(kampala_run, layer="tiles")
    for k, members in tiles.groupby("cluster"):
        section = text.split(f'id="cluster-{k}"')[1].split("<h2")[0]
        assert f"<b>{len(members)} tiles</b>" in section
        closest, random_ = section.split("at random")
        shown = [int(t) for t in re.findall(r"<figcaption>tile (\d+)</figcaption>", closest)]
        assert len(shown) == EXAMPLES
        # the closest are the tiles with the smallest distance to the centre, in that order
        assert shown == members.sort_values(["clust_dist", "tile_id"]).tile_id.head(EXAMPLES).tolist()
        others = [int(t) for t in re.findall(r"<figcaption>tile (\d+)</figcaption>", random_)]
        assert len(others) == EXAMPLES and not set(others) & set(shown) and set(others) <= set(members.tile_id)
    assert "eta-squared" in text and "bldg_cov" in text
    # the gallery tiles are the raster's own pixels: one of them, decoded, is a 64 px RGB photograph
    from matplotlib.image import imread
    import io

    tile = imread(io.BytesIO(images_of(text)[2]), format="png")
    assert tile.shape[:2] == (64, 64) and tile[..., :3].std() > 0.02


def test_an_existing_report_is_kept_and_a_bad_run_is_named(report, kampala_run, tmp_path):
    before = report.read_bytes()
    proc = run_cli("report", kampala_run, "--out", report)
    assert proc.returncode == 2 and "already exists" in proc.stderr and report.read_bytes() == before
    lone = tmp_path / "lone.gpkg"
    shutil.copyfile(kampala_run, lone)                      # a GeoPackage without its manifest
    proc = run_cli("report", lone, "--out", tmp_path / "r.html")
    assert proc.returncode == 2 and "RUN" in proc.stderr and "manifest" in proc.stderr
    assert not (tmp_path / "r.html").exists()


def screenshot(html, png) -> np.ndarray:
    from matplotlib.image import imread

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (make setup installs it)")
    png.unlink(missing_ok=True)
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={png}",
                    "--window-size=1200,2000", "--hide-scrollbars", html.resolve().as_uri()],
                   capture_output=True, timeout=120, check=False)
    assert png.is_file(), "chromium wrote no screenshot"
    return imread(png)


def test_chromium_shows_the_gallery(report, kampala_run, tmp_path):
    RESULTS.mkdir(exist_ok=True)
    shot = screenshot(report, RESULTS / "report_gallery.png")
    assert shot.shape[:2] == (2000, 1200) and shot[..., :3].std() > 0.05          # not a blank page
    # the same report without its galleries (the raster has moved away) shows far fewer colours: what fills the
    # screenshot is the photographs of the galleries
    moved = tmp_path / "moved.gpkg"
    shutil.copyfile(kampala_run, moved)
    manifest = json.loads(kampala_run.with_name("kampala_manifest.json").read_text())
    manifest["inputs"]["raster"] = str(tmp_path / "gone.tif")
    moved.with_name("moved_manifest.json").write_text(json.dumps(manifest))
    proc = run_cli("report", moved, "--out", tmp_path / "moved.html", check=0)
    assert "galleries are left out" in proc.stderr
    bare = screenshot(tmp_path / "moved.html", RESULTS / "report_without_gallery.png")

    def colours(image):
        return len(np.unique((image[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0))

    assert colours(shot) > 5 * colours(bare), (colours(shot), colours(bare))


@pytest.mark.parametrize("kind", ["similar", "classify"])
def test_a_similar_or_classify_run_gets_its_own_report(kind, kampala_z19, tmp_path):
    """similar: the query and the most similar tiles in rank order; classify: the cross-validation scores, the
    confusion matrix and per class a gallery of its most confident tiles."""
    import geopandas as gpd
    from shapely.geometry import Point

    out = tmp_path / f"{kind}.gpkg"
    if kind == "similar":
        run_cli("similar", kampala_z19, "--query-tiles", "3,10", "--top", 6, "--out", out, check=0)
    else:
        import rasterio

        with rasterio.open(kampala_z19) as src:
            t = src.transform
        points = [Point(*(t * ((c + 0.5) * 64, (r + 0.5) * 64))) for r in range(8) for c in (0, 1, 10, 11)]
        gpd.GeoDataFrame({"side": ["west", "west", "east", "east"] * 8}, geometry=points, crs=src.crs).to_file(
            tmp_path / "labels.gpkg")
        run_cli("classify", kampala_z19, "--labels", tmp_path / "labels.gpkg", "--field", "side", "--folds", 3,
                "--out", out, check=0)
    html = tmp_path / "r.html"
    proc = run_cli("report", out, "--out", html, "--examples", 3, "--progress", "json", check=0)
    assert {"gallery", "write"} <= {json.loads(line)["stage"] for line in proc.stdout.splitlines()}
    text = html.read_text(encoding="utf-8")
    assert not re.search(r"https?:|file:|<script", text, re.I)
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", text)
    tiles = gpd.read_file(out, layer="tiles")
    if kind == "similar":
        assert 'id="query"' in text and 'id="most-similar"' in text
        assert [c for c in captions if c.startswith("tile ")] == ["tile 3", "tile 10"]          # the query
        ranked = [c for c in captions if c[0].isdigit()]
        best = tiles[tiles["rank"] >= 1].sort_values("rank").head(6)
        assert [int(c.split("tile ")[1].split(":")[0]) for c in ranked] == best.tile_id.tolist()
    else:
        assert 'id="validation"' in text and "Spatial cross-validation" in text and "accuracy <b>" in text
        manifest = json.loads((tmp_path / f"{kind}_manifest.json").read_text())
        for k, _name in enumerate(manifest["classes"]):
            section = text.split(f'id="class-{k}"')[1].split("<h2")[0]
            assert f"<b>{int((tiles.class_id == k).sum())} tiles</b>" in section
            confident = section.split("most confident")[1].split("at random")[0]
            shown = [int(x) for x in re.findall(r"<figcaption>tile (\d+):", confident)]
            expected = tiles[tiles.class_id == k].sort_values(["prob", "tile_id"], ascending=[False, True])
            assert shown == expected.tile_id.head(3).tolist()
        pngs = images_of(text)
        assert len(pngs) >= 1 + 2 * len(manifest["classes"])                 # confusion matrix, maps, galleries


def test_a_sweep_report_holds_its_metrics_and_lineage_plots(kampala_z19, tmp_path):
    out = tmp_path / "sweep.gpkg"
    run_cli("sweep", kampala_z19, "--out", out, "--k", "2..3", "--tile-size", "64px", check=0)
    html = tmp_path / "sweep_report.html"
    run_cli("report", out, "--out", html, check=0)
    text = html.read_text(encoding="utf-8")
    assert 'id="sweep"' in text and "64px: K = 2, 3" in text.replace("tiles_64px", "64px")
    shown = re.findall(r'alt="([^"]+\.png)"', text)
    assert "sweep_metrics.png" in shown and "sweep_lineage_64px.png" in shown, shown
    assert all(png.startswith(b"\x89PNG") for png in images_of(text))
