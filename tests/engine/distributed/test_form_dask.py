"""--form on Dask: the features come from the workers, the morphometrics are joined here; the clusters and
predict's assignment are those of one process (issue 16 part 1)."""
from __future__ import annotations

import geopandas as gpd
import numpy as np


def test_cluster_and_predict_with_form_on_dask_give_the_labels_of_one_process(dask_cluster, kampala_z19,
                                                                               kampala_buildings, tmp_path):
    from engine.tools.cluster import ClusterParams, run_cluster
    from engine.tools.predict import PredictParams, run_predict

    address = dask_cluster[0].scheduler_address
    common = dict(raster=str(kampala_z19), k=5, quicklook=False, use_cache=False, form=str(kampala_buildings))
    run_cluster(ClusterParams(out=str(tmp_path / "one.gpkg"), **common))
    run_cluster(ClusterParams(out=str(tmp_path / "dask.gpkg"), dask=address, **common))
    run_predict(PredictParams(model=str(tmp_path / "one_model.pt"), raster=str(kampala_z19),
                              out=str(tmp_path / "pred.gpkg"), quicklook=False, form=str(kampala_buildings),
                              dask=address))
    labels = [gpd.read_file(tmp_path / f"{n}.gpkg", layer="tiles").cluster.to_numpy()
              for n in ("one", "dask", "pred")]
    np.testing.assert_array_equal(labels[0], labels[1])
    np.testing.assert_array_equal(labels[0], labels[2])
