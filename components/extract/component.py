"""KFP component of the extraction step: `dal extract` of the test tracklets of one split."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.common.kfp_io import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def extract(
    ingested: Input[Dataset],
    model: Input[Model],
    split: int,
    extract_options: dict,
    storage_root: str,
    run_key: str,
    mlflow_tracking_uri: str,
    mlflow_experiment: str,
    mlflow_parent_run_id: str,
    features: Output[Dataset],
    variant: str = "",
) -> None:
    """Features of the split's test tracklets (own footage: of every tracklet, the gallery that
    `dal search` runs over; evaluation picks the labelled ones) (``extract_options``: the user's
    ExtractConfig fields); ``variant`` names a model other than the trained one
    (``initial``: the weights training started from), kept in a folder of that name."""
    from components.common import kfp_io, storage
    from components.common.dataset import OWN_FOOTAGE, Dataset
    from components.extract.config import EXTRACT_OPTIONS
    from components.extract.run import run

    split = int(split)  # ParallelFor items may arrive as floats
    dataset = kfp_io.pointed_uri(ingested)
    subset = "all" if Dataset.open(dataset).name in OWN_FOOTAGE else "test"
    output = storage.join(kfp_io.run_dir(storage_root, run_key, split, variant), "features.parquet")
    summary = run(
        EXTRACT_OPTIONS.build(
            extract_options,
            dataset=dataset,
            model=kfp_io.pointed_uri(model),
            output=output,
            subset=subset,
            split=split,
            progress=False,
            mlflow_tracking_uri=mlflow_tracking_uri,
            mlflow_experiment=mlflow_experiment,
            mlflow_parent_run_id=mlflow_parent_run_id,
            mlflow_run_name=kfp_io.task_run_name("extract", split, variant),
        )
    )
    kfp_io.publish(features, output, split=split, tracklets=summary.get("tracklets", 0))
