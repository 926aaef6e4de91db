"""Ray Data scoring on a real local two-worker Ray cluster: exactly the single-process numbers,
and ``pal label next --address`` scoring its pool there."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import pal
from pal.cli import main
from pal.distributed import last_ray_run
from pal.labeling.demo import write_demo
from pal.models import ScoringNet, build_backbone
from pal.placement import Distributed, HostImages
from pal.pretext.rotation import score_pool
from pal.training import Normalizer, predict_logits
from tests.fast import FAST_LABEL
from tests.helpers import read_csv, studio_export
from tests.servers import local_cluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_workers():
    """A head with no CPUs and two worker nodes of one CPU each; yields its address."""
    pytest.importorskip("ray")
    with local_cluster({"num_cpus": 1}, {"num_cpus": 1}) as (cluster, _):
        yield cluster.address


@pytest.fixture(scope="module")
def connected(two_workers):
    import ray

    ray.init(address=two_workers, log_to_driver=False)
    return ray


@pytest.mark.parametrize("precision", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_ray_data_scores_are_exactly_the_single_process_scores(connected, precision):
    data = pal.load_dataset("digits")
    x = data.x_train[:700]
    with torch.random.fork_rng():
        torch.manual_seed(3)
        net = ScoringNet(build_backbone("cnn", 1, (8, 8)), 10)
    normalize = Normalizer(x)
    host = HostImages(x, "cpu", distributed=Distributed(min_pool=0, workers=2))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision is not None):
        local = score_pool(net, x, normalize, 64, keep_features=True)
        before = last_ray_run()
        remote = score_pool(net, host, normalize, 64, keep_features=True)
        run = last_ray_run()
        assert run is not before and (run.actors, run.images) == (2, 700)
        assert run.chunks > 2  # the pool was split across the actors
        pairs = zip(local.__dict__.values(), remote.__dict__.values(), strict=True)
        for a, b in pairs:  # S_S, S_C and the features of the head fine-tune
            assert a.shape == b.shape and a.dtype == b.dtype
            assert torch.equal(a, b)
        # the task network's passes (entropy, coreset, predictions) go the same way
        view = host[torch.arange(699, -1, -2)]
        assert torch.equal(
            predict_logits(net.backbone, view, normalize, 64),
            predict_logits(net.backbone, x[torch.arange(699, -1, -2)], normalize, 64),
        )
    assert len(x) < 100_000  # the default threshold would have kept this pool local
    small = HostImages(x, "cpu", distributed=Distributed(min_pool=701))
    before = last_ray_run()
    assert torch.equal(
        predict_logits(net.backbone, small, normalize, 64),
        predict_logits(net.backbone, x, normalize, 64),
    )
    assert last_ray_run() is before  # below min_pool: scored in this process


def test_label_next_scores_the_pool_on_the_cluster_it_is_pointed_at(two_workers, tmp_path):
    import ray

    ray.shutdown()  # this process starts unconnected: only --address connects it
    demo = tmp_path / "demo"
    write_demo(demo)
    project = tmp_path / "proj"
    init = ["label", "init", str(project), "--pool", str(demo / "manifest.csv"), *FAST_LABEL,
            "--set", f"data_dir={tmp_path / 'data'}",
            "--set", "distributed_min_pool=0"]  # fmt: skip
    assert main(init) == 0
    nxt = ["label", "next", str(project), "--n", "20", "--quiet", "--no-tracking"]
    assert main(nxt) == 0  # round 1, label-free, in this process (not connected)
    export = tmp_path / "export.json"
    export.write_text(json.dumps(studio_export(project, demo / "answers.csv", 1)))
    assert main(["label", "import", str(project), str(export)]) == 0
    twin = tmp_path / "twin"
    shutil.copytree(project, twin)

    # round 2 with PAL: here, then on the cluster
    assert main([*nxt[:2], str(twin), *nxt[3:], "--strategy", "pal"]) == 0
    local = json.loads((twin / "rounds/002/round.json").read_text())
    assert local["ray_scoring"] is None and "on the device" in local["placement"]
    assert main([*nxt, "--strategy", "pal", "--address", two_workers]) == 0
    remote = json.loads((project / "rounds/002/round.json").read_text())
    assert "scored by Ray Data" in remote["placement"]
    assert remote["ray_scoring"]["actors"] == 2
    assert read_csv(project / "rounds/002/batch.csv") == read_csv(twin / "rounds/002/batch.csv")
    assert remote["query_metrics"] == local["query_metrics"]
    assert (
        Path(project / "rounds/002/tasks.json").read_text()
        == Path(twin / "rounds/002/tasks.json").read_text()
    )
