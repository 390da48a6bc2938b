"""`lens-ray synthesize` (jobs/synthesize.py) end to end on the session's local Ray, from a finished run: both
modes, a LENS and a non-LENS method, float16, two workers; every pair is the pure function's pair."""
import numpy as np
import pyarrow as pa
import pytest
import torch

from lens_ray.cli import synthesize_main
from lens_ray.config import SynthConfig
from lens_ray.core.augment import Augmenter
from lens_ray.core.synth_stream import decode_seeded, materialize
from lens_ray.data.finished_run import FinishedRun
from lens_ray.store.columns import arrow_to_embeddings


def _source(run_uri: str, method: str, seed: int = 0):
    run = FinishedRun.open(run_uri)
    pos, neg = (torch.from_numpy(a) for a in run.table("seed"))
    vae = run.vae(seed) if method == "lens" else None
    synth: SynthConfig = run.config.synth
    return Augmenter.fit(method, seed, synth, pos, neg, vae), pos, neg


@pytest.mark.parametrize("mode,method,dtype,workers", [("materialized", "lens", "float16", "2"),
                                                        ("seeded", "direct_perturbation", "float32", "1")])
def test_synthesize_job_writes_the_pure_functions_pairs(local_run, tmp_path, mode, method, dtype, workers):
    _, _, run = local_run
    out = tmp_path / f"{mode}-{method}"
    man = synthesize_main(["--from-run", run.uri, "--pairs", "1000", "--mode", mode, "--method", method,
                           "--dtype", dtype, "--workers", workers, "--shard-pairs", "300", "--k", "2",
                           "--out", str(out)])
    assert len(man.files) == 4 and sum(f["rows"] for f in man.files.values()) == 1000
    assert man.meta["method"] == method and man.meta["mode"] == mode
    table = pa.concat_tables([man.read_parquet(n) for n in sorted(man.files)])
    aug, pos, neg = _source(run.uri, method)
    want_pos, want_neg = materialize(aug, pos, neg, 0, 1000, 2)
    if mode == "materialized":
        got_pos, got_neg = (arrow_to_embeddings(table.column(c)) for c in ("pos", "neg"))
        assert table.schema.field("pos").type.value_type == pa.float16()
        assert np.allclose(got_pos, want_pos.numpy(), atol=2e-2, rtol=1e-2)     # float16 rounding only
        assert np.allclose(got_neg, want_neg.numpy(), atol=2e-2, rtol=1e-2)
    else:
        got_pos, got_neg = decode_seeded(aug, pos, neg, table["unit"].to_numpy(), table["a"].to_numpy(),
                                         table["b"].to_numpy(), 2)
        assert torch.allclose(got_pos, want_pos, atol=1e-6) and torch.allclose(got_neg, want_neg, atol=1e-6)
        assert sum(f["bytes"] for f in man.files.values()) < 1000 * 30            # ids, not embeddings
    again = synthesize_main(["--from-run", run.uri, "--pairs", "1000", "--mode", mode, "--method", method,
                             "--dtype", dtype, "--workers", workers, "--shard-pairs", "300", "--k", "2",
                             "--out", str(out)])
    assert again.files == man.files                                              # a re-run writes nothing new
