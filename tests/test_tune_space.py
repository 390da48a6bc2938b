"""The search space on a real Optuna study (no Ray): what each method draws, the default point, overrides."""
import optuna
import pytest

from lens_ray.config import ConfigError, LensConfig, TuneConfig
from lens_ray.core.search import apply_point, default_point, suggest, tuned_overrides
from lens_ray.store.search_results import apply_tuned

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _points(tcfg: TuneConfig, n: int, sources: int = 1, enqueue: dict | None = None,
            base: LensConfig | None = None) -> list[dict]:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    if enqueue:
        study.enqueue_trial(enqueue)
    out = []
    for _ in range(n):
        trial = study.ask()
        suggest(trial, tcfg, sources, base or LensConfig())
        out.append(dict(trial.params))
        study.tell(trial, 0.0)
    return out


def test_each_method_draws_only_its_own_knobs():
    points = _points(TuneConfig(), 60)
    assert {p["method"] for p in points} == {"lens", "direct_perturbation", "gaussian_sampling"}
    for p in points:
        lens_knobs = {k for k in p
                      if k.startswith("vae.") or k in ("synth.noise_var", "synth.select", "synth.residual")}
        assert bool(lens_knobs) == (p["method"] == "lens")
        assert ("synth.dp_noise_var" in p) == (p["method"] == "direct_perturbation")
        assert ("synth.gs_shrinkage" in p) == (p["method"] == "gaussian_sampling")
        assert p["factor"] in (2, 4, 8) and 0.1 <= p["reward.synthetic_weight"] <= 1.0
        assert "source" not in p


def test_open_choices_and_sources_widen_the_space():
    narrow = _points(TuneConfig(open_choices=False, methods=("lens",)), 10)
    assert all("vae.hidden_dims" not in p and "reward.max_steps" not in p for p in narrow)
    wide = _points(TuneConfig(methods=("lens",)), 20, sources=2)
    assert {p["source"] for p in wide} == {0, 1} and {p["synth.residual"] for p in wide} == {False, True}


def test_every_point_makes_a_valid_config():
    base = LensConfig()
    for p in _points(TuneConfig(), 40):
        cfg, method, factor, _ = apply_point(base, p)
        assert method == p["method"] and factor == p["factor"]
        if method == "lens":
            assert cfg.vae.hidden_dims == tuple(int(h) for h in p["vae.hidden_dims"].split(","))
            assert cfg.synth.noise_var == p["synth.noise_var"] and cfg.vae.gamma == p["vae.gamma"]
    assert base == LensConfig()                                # the base is never changed


def test_default_point_is_the_runs_own_lens_settings_and_can_be_enqueued():
    base = LensConfig()
    base.reward.max_steps = 100                                 # not one of the search's usual choices
    base.factors = (8,)
    point = default_point(base, 1)
    assert point["factor"] == 8 and point["reward.max_steps"] == 100
    first = _points(base.tune, 1, enqueue=point, base=base)[0]
    assert first == point
    cfg, method, factor, _ = apply_point(base, point)
    assert (method, factor) == ("lens", 8) and cfg == base     # measuring the default changes nothing


def test_tuned_overrides_reach_a_run_config():
    point = {"method": "direct_perturbation", "factor": 2, "synth.dp_noise_var": 0.05, "reward.max_steps": 1200,
             "reward.synthetic_weight": 0.3}
    embed = {"model": "minilm", "pooling": "mean", "max_length": 128, "dtype": "auto", "padding_side": "left"}
    best = {"point": point, "overrides": tuned_overrides(point, embed)}
    cfg = apply_tuned(LensConfig(), best)
    assert cfg.synth.dp_noise_var == 0.05 and cfg.reward.max_steps == 1200 and cfg.reward.synthetic_weight == 0.3
    assert cfg.embed.model == "minilm" and cfg.embed.pooling == "mean" and cfg.embed.max_length == 128
    assert cfg.factors == (2, 4, 8) and cfg.embed.padding_side == LensConfig().embed.padding_side
    with pytest.raises(ConfigError, match="synth.nope"):
        apply_tuned(LensConfig(), {"point": point, "overrides": {"synth.nope": 1}})
