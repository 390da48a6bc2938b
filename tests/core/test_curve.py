"""core/curve.py on tensors: nested subsets by prompt, one task's rows, pairing and verdicts."""
import numpy as np
import pytest

from lens_ray.config import LensConfig
from lens_ray.core.curve import nested_subset, summarize_curve, task_rows, verdicts
from lens_ray.core.records import Embedded


def test_nested_subsets_keep_prompts_whole_and_grow_by_prefix():
    groups = [f"p{i // 3}" for i in range(90)]
    small, large = nested_subset(groups, 20, seed=1, split_seed=0), nested_subset(groups, 50, seed=1, split_seed=0)
    assert len(small) == 20 and len(large) == 50 and list(large[:20]) == list(small)
    cut = [g for g in {groups[i] for i in small} if sum(groups[i] == g for i in small) != 3]
    assert len(cut) <= 1                                          # only the last prompt taken may be cut
    assert list(nested_subset(groups, 20, seed=2, split_seed=0)) != list(small)


def _emb(n=120, m=60, d=12, seed=0) -> tuple[Embedded, list[str]]:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(d)
    def side(k):
        base = rng.standard_normal((k, d))
        noise = 0.5 * rng.standard_normal((k, d))
        return (base + 0.4 * w).astype(np.float32), (base - 0.4 * w + noise).astype(np.float32)
    (sp, sn), (ep, en) = side(n), side(m)
    return Embedded(sp, sn, ep, en, None, None), [f"p{i // 2}" for i in range(n)]


def test_a_task_fits_every_method_and_head_on_its_subset():
    emb, groups = _emb()
    cfg = LensConfig()
    cfg.methods, cfg.factors, cfg.reward.heads = ("original", "mean_diff", "direct_perturbation", "lens"), (2, 4), \
        ("mlp", "linear")
    cfg.vae.epochs, cfg.reward.max_steps, cfg.reward.hidden_dim, cfg.vae.latent_dim = 3, 40, 16, 4
    rows = task_rows(cfg, emb, groups, "40", seed=0)
    keys = {(r["method"], r["factor"], r["head_kind"]) for r in rows}
    assert keys == {("mean_diff", 1, "linear")} | {(m, f, h) for h in ("mlp", "linear")
                                                   for m, f in (("original", 1), ("direct_perturbation", 2),
                                                                ("direct_perturbation", 4), ("lens", 2), ("lens", 4))}
    assert all(r["size"] == 40 and r["status"] == "ok" for r in rows)
    assert all(r["train_pairs"] < 40 for r in rows)               # its validation part is held out
    assert all(r["accuracy"] > 0.75 for r in rows), rows          # every head learned the separable signal


def test_summary_pairs_each_seed_against_original_on_the_same_head():
    rows = [{"size": 10, "method": m, "factor": f, "head_kind": h, "seed": s, "status": "ok", "bon_gold": None,
             "accuracy": a} for (m, f, h, s, a) in [
        ("original", 1, "mlp", 0, 0.6), ("original", 1, "mlp", 1, 0.7), ("original", 1, "linear", 0, 0.5),
        ("original", 1, "linear", 1, 0.5), ("lens", 4, "mlp", 0, 0.62), ("lens", 4, "mlp", 1, 0.74),
        ("lens", 4, "linear", 0, 0.6), ("lens", 4, "linear", 1, 0.5), ("mean_diff", 1, "linear", 0, 0.55),
        ("mean_diff", 1, "linear", 1, 0.65)]]
    summary = {(r["method"], r["head_kind"]): r for r in summarize_curve(rows)}
    assert summary[("lens", "mlp")]["accuracy_vs_original"]["mean"] == pytest.approx(0.03)
    assert summary[("lens", "linear")]["accuracy_vs_original"]["mean"] == pytest.approx(0.05)
    v = verdicts(rows, list(summary.values()))[0]
    assert v["best_head"] == "mlp" and v["over_mean_diff"] == pytest.approx(0.05)
    assert v["best_augmentation"] == "lens x4" and v["augmentation_pays"] == (0.03 > 2 * v["gain_se"])


def _rows(size: int, cells: dict) -> list[dict]:
    return [{"size": size, "method": m, "factor": f, "head_kind": h, "seed": s, "status": "ok", "bon_gold": None,
             "accuracy": a} for (m, f, h), accs in cells.items() for s, a in enumerate(accs)]


def test_verdicts_per_size_say_beyond_noise_only_past_twice_the_standard_error():
    base = [0.60, 0.70, 0.65]
    small = _rows(10, {("original", 1, "mlp"): base,
                       ("original", 1, "linear"): [0.5, 0.5, 0.5],
                       ("mean_diff", 1, "linear"): [b - d for b, d in zip(base, (0.01, 0.03, 0.05))],  # se .0115
                       ("lens", 4, "mlp"): [b + d for b, d in zip(base, (-0.01, 0.03, 0.07))],         # se .023
                       ("lens", 8, "mlp"): [b + d for b, d in zip(base, (0.0, 0.01, 0.02))],           # se .0058
                       ("lens", 4, "linear"): [0.9, 0.9, 0.9]})                      # another head: not its verdict
    large = _rows(20, {("original", 1, "linear"): [0.8, 0.8, 0.8], ("original", 1, "mlp"): base,
                       ("mean_diff", 1, "linear"): [0.79, 0.81, 0.83],                # -0.01, se 0.0115: not beaten
                       ("lens", 4, "linear"): [0.81, 0.82, 0.83]})                    # +0.02, se 0.0058: pays
    rows = small + large
    v = {x["size"]: x for x in verdicts(rows, summarize_curve(rows))}
    assert set(v) == {10, 20}
    assert v[10]["best_head"] == "mlp" and v[10]["original"] == pytest.approx(0.65)
    assert v[10]["over_mean_diff"] == pytest.approx(0.03)
    assert v[10]["over_mean_diff_se"] == pytest.approx(0.02 / 3 ** .5)
    assert v[10]["head_beats_mean_diff"] is True                  # 0.03 > 2 x 0.0115
    assert v[10]["best_augmentation"] == "lens x4" and v[10]["gain"] == pytest.approx(0.03)
    assert v[10]["augmentation_pays"] is False                    # 0.03 < 2 x 0.023 (but > 1 x 0.023)
    assert v[20]["best_head"] == "linear" and v[20]["over_mean_diff"] == pytest.approx(-0.01)
    assert v[20]["head_beats_mean_diff"] is False
    assert v[20]["best_augmentation"] == "lens x4" and v[20]["augmentation_pays"] is True


def test_exactly_twice_the_standard_error_is_not_beyond_noise_nor_one_and_a_half():
    # binary fractions, so the paired gains and their standard errors are exact: [0.75, 0.25] has mean 0.5 and
    # standard error 0.25 (exactly 2 se); [0.625, 0.125] has mean 0.375 (1.5 se)
    at_two = _rows(30, {("original", 1, "mlp"): [1.0, 0.5], ("mean_diff", 1, "linear"): [0.25, 0.25],
                        ("lens", 4, "mlp"): [1.75, 0.75]})
    at_one_and_a_half = _rows(40, {("original", 1, "mlp"): [1.0, 0.5], ("mean_diff", 1, "linear"): [0.375, 0.375],
                                   ("lens", 4, "mlp"): [1.625, 0.625]})
    beyond = _rows(50, {("original", 1, "mlp"): [1.0, 0.5], ("mean_diff", 1, "linear"): [0.125, 0.0],
                        ("lens", 4, "mlp"): [1.875, 0.5 + 0.375]})
    rows = at_two + at_one_and_a_half + beyond
    v = {x["size"]: x for x in verdicts(rows, summarize_curve(rows))}
    assert v[30]["over_mean_diff"] == 0.5 and v[30]["over_mean_diff_se"] == 0.25 and v[30]["gain_se"] == 0.25
    assert v[30]["head_beats_mean_diff"] is False and v[30]["augmentation_pays"] is False
    assert v[40]["over_mean_diff_se"] == 0.25 and v[40]["head_beats_mean_diff"] is False
    assert v[40]["gain"] == 0.375 and v[40]["augmentation_pays"] is False
    assert v[50]["head_beats_mean_diff"] is True and v[50]["augmentation_pays"] is True    # 0.6875 vs 0.5625; 0.625


def test_sizes_up_to_the_seed_pairs_and_no_further():
    from lens_ray.core.curve import size_of
    assert size_of("all", 120) == 120 and size_of("120", 120) == 120 and size_of("50", 120) == 50
    with pytest.raises(ValueError, match="more than the run's 120"):
        size_of("121", 120)


def test_summary_counts_failures_and_falls_back_to_the_mlp_original():
    rows = _rows(10, {("original", 1, "mlp"): [0.6, 0.7], ("lens", 4, "linear"): [0.65, 0.8]})
    rows.append({"size": 10, "method": "lens", "factor": 4, "head_kind": "linear", "seed": 2, "status": "failed",
                 "accuracy": None, "bon_gold": None})
    s = {(r["method"], r["head_kind"]): r for r in summarize_curve(rows)}
    assert s[("lens", "linear")]["failed"] == 1 and s[("original", "mlp")]["failed"] == 0
    assert s[("lens", "linear")]["accuracy"]["n"] == 2            # the failed seed has no metric
    assert s[("lens", "linear")]["accuracy_vs_original"]["mean"] == pytest.approx(0.075)   # against original mlp


def test_a_diverged_vae_fails_only_the_lens_rows():
    emb, groups = _emb()
    cfg = LensConfig()
    cfg.methods, cfg.factors, cfg.reward.heads = ("original", "direct_perturbation", "lens"), (2,), ("mlp",)
    cfg.vae.epochs, cfg.vae.lr, cfg.reward.max_steps = 3, 1e30, 20
    rows = {r["method"]: r for r in task_rows(cfg, emb, groups, "40", seed=0)}
    assert rows["lens"]["status"] == "failed" and rows["lens"]["reason"].startswith("VAE: ")
    assert rows["original"]["status"] == rows["direct_perturbation"]["status"] == "ok"
