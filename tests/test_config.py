import pytest

from lens_ray.cli import config_from_args, run_parser
from lens_ray.config import ConfigError, LensConfig, load_config


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "cfg.yaml"
    f.write_text("name: from-yaml\nfactors: [2, 4]\nvae:\n  beta: 0.5\n  hidden_dims: [128, 64]\n"
                 "synth:\n  residual: true\n")
    cfg = load_config(str(f), {"vae.beta": "0.25", "seeds": "3"})
    assert cfg.name == "from-yaml" and cfg.factors == (2, 4) and cfg.seeds == 3
    assert cfg.vae.beta == 0.25 and cfg.vae.hidden_dims == (128, 64) and cfg.synth.residual is True


def test_cli_flags_override_file(tmp_path):
    f = tmp_path / "cfg.yaml"
    f.write_text("seeds: 2\ndata:\n  seed_pairs: 50\n")
    args = run_parser().parse_args(["--config", str(f), "--seed-pairs", "70", "--factors", "4,8",
                                    "--set", "synth.noise_var=0.05", "--model", "minilm"])
    cfg = config_from_args(args)
    assert cfg.seeds == 2 and cfg.data.seed_pairs == 70 and cfg.factors == (4, 8)
    assert cfg.synth.noise_var == 0.05 and cfg.embed.model == "minilm"


def test_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="vae.betta"):
        load_config(None, {"vae.betta": 1})
    with pytest.raises(ConfigError, match="seeds"):
        load_config(None, {"seeds": "many"})
    with pytest.raises(ConfigError, match="methods"):
        load_config(None, {"methods": "lens,magic"})
    with pytest.raises(ConfigError, match="synth.noise_var"):
        load_config(None, {"synth.noise_var": -1})


@pytest.mark.parametrize("key,value,message", [
    ("vae.latent_dim", "0", "vae.latent_dim: must be >= 1"),
    ("vae.hidden_dims", "64,0", "vae.hidden_dims: must be >= 1"),
    ("methods", "", "methods: needs at least one value"),
    ("factors", "1", "factors: must be >= 2"),
    ("synth.noise_var", "nan", "synth.noise_var: must be a finite number"),
    ("synth.noise_var", "0", "synth.noise_var: must be > 0"),
    ("vae.lr", "inf", "vae.lr: must be a finite number"),
    ("reward.lr", "1e39", "reward.lr: must be < 1e.38, got 1e.39"),
    ("reward.max_steps", "0", "reward.max_steps: must be >= 1"),
    ("reward.dropout", "1.0", "reward.dropout: must be < 1"),
    ("data.val_fraction", "1", "data.val_fraction: must be < 1"),
    ("embed.pooling", "max", "embed.pooling: 'max' is not one of"),
    ("methods", "lens,lens", "methods: each method once"),
    ("name", "../../x", "name: '../../x' is not a plain name"),
    ("search.name", "a/b", "search.name: 'a/b' is not a plain name"),
    ("seeds", "2.5", "seeds: cannot read"),
    ("seeds", True, "seeds: cannot read True as int"),                  # YAML `seeds: true`
    ("factors", [4, True], "factors: cannot read"),
    ("curve.sizes", "50,50", "curve.sizes: each size once"),
    ("reward.heads", "mlp,mlp", "reward.heads: each head once"),
])
def test_degenerate_settings_are_refused_naming_the_field(key, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(None, {key: value})


def test_every_setting_is_described_once_and_flags_come_from_the_fields():
    import dataclasses

    from lens_ray.cli import parser
    from lens_ray.config import LensConfig, walk
    for path, f, _ in walk(LensConfig()):
        assert f.metadata.get("help"), f"{path} has no help"
    helps = {a.dest: a.help for a in run_parser()._actions}
    seed_pairs = next(f for f in dataclasses.fields(LensConfig().data) if f.name == "seed_pairs")
    assert helps["data.seed_pairs"].startswith(seed_pairs.metadata["help"])       # the field's own words
    assert "--name" in {o for a in parser("search", "")._actions for o in a.option_strings}
    assert {a.dest for a in parser("search", "")._actions if "--name" in a.option_strings} == {"search.name"}


def test_resources_never_reach_a_fingerprint():
    from lens_ray.config import LensConfig
    from lens_ray.core.pairs import Pair, seed_splits
    from lens_ray.core.records import Cell
    from lens_ray.pipelines.run import StageKeys
    pairs = [Pair(i, [{"role": "user", "content": f"q{i}"}], "a", "b", i) for i in range(40)]
    splits = seed_splits(pairs, 0.2, 2, 0)
    small, big = LensConfig(), load_config(None, {"resources.vae_workers": 8, "resources.embed_actors": 4,
                                                  "resources.reward_cpus_per_worker": 3.0})
    small.embed.model = big.embed.model = "minilm"
    a, b = StageKeys(small, splits, 8), StageKeys(big, splits, 8)
    job = Cell("lens", 4, 1)
    assert (a.vae(1), a.synthetic(job), a.head(job)) == (b.vae(1), b.synthetic(job), b.head(job))
    big.synth.noise_var = 0.5
    assert a.synthetic(job) != b.synthetic(job) and a.head(Cell("original", 1, 1)) == b.head(Cell("original", 1, 1))


def test_legacy_settings_are_read_at_their_new_place(tmp_path):
    """Settings that moved to `resources` (a finished run's stored config, an old YAML, an old --set) still
    read, each at its new place; every legacy name is covered."""
    from lens_ray.config import LEGACY
    f = tmp_path / "old.yaml"
    f.write_text("embed:\n  num_actors: 3\n  batch_size: 5\nvae:\n  num_workers: 2\ntune:\n  max_concurrent: 4\n")
    cfg = load_config(str(f), {"reward.cpus_per_worker": "0.5"})
    assert (cfg.resources.embed_actors, cfg.resources.embed_batch_size, cfg.resources.vae_workers,
            cfg.resources.tune_max_concurrent, cfg.resources.reward_cpus_per_worker) == (3, 5, 2, 4, 0.5)
    values = {"embed.gpus_per_actor": "0", "embed.torch_threads": "2", "synth.batch_size": "64",
              "synth.num_actors": "1", "synth.cpus_per_actor": "0.5", "tune.cpus_per_trial": "1",
              "embed.cpus_per_actor": "0.5", "reward.num_workers": "1", "vae.cpus_per_worker": "0.5"}
    assert set(LEGACY) == set(values) | {"embed.num_actors", "embed.batch_size", "vae.num_workers",
                                         "tune.max_concurrent", "reward.cpus_per_worker", "from_tune"}
    cfg = load_config(None, values)
    for old, new in LEGACY.items():
        if old in values:
            section, name = new.split(".")
            assert str(getattr(getattr(cfg, section), name)) in (values[old], str(float(values[old])))


def test_the_search_section_is_read_under_its_earlier_name(tmp_path):
    """`tune` was the search's section and `from_tune` its run setting: an old YAML, an old --set and a stored
    config (a report's) read at their new places; the --from-tune flag is --from-search's earlier name."""
    from lens_ray.cli import parser
    from lens_ray.config import config_from_dict
    f = tmp_path / "old.yaml"
    f.write_text("tune:\n  folds: 3\n  max_concurrent: 2\nfrom_tune: runs/s\n")
    cfg = load_config(str(f), {"tune.test_seeds": "7"})
    assert (cfg.search.folds, cfg.search.test_seeds, cfg.resources.tune_max_concurrent) == (3, 7, 2)
    assert cfg.from_search == "runs/s"
    stored = {**LensConfig().to_dict(), "tune": {"repeats": 3}, "from_tune": "x"}
    del stored["search"], stored["from_search"]
    again = config_from_dict(stored)
    assert again.search.repeats == 3 and again.from_search == "x"
    assert parser("run", "").parse_args(["--from-tune", "u"]).from_search == "u"
    with pytest.raises(ConfigError, match="search.nope: unknown option"):
        load_config(None, {"tune.nope": "1"})


BOMB = """\
a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
seeds: *h
"""


def test_a_yaml_alias_bomb_is_refused_in_one_short_line(tmp_path):
    """A few hundred bytes of nested aliases (9^8 values) end at once, and no message echoes a huge value."""
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    with pytest.raises(ConfigError, match="expands to more than 100,000 values") as err:
        load_config(str(path))
    assert len(str(err.value)) < 300
    small = tmp_path / "small.yaml"                              # under the bound: the setting's own error, short
    small.write_text("seeds: [" + ", ".join(['"' + "y" * 500 + '"'] * 50) + "]\n")
    with pytest.raises(ConfigError, match="seeds: cannot read") as err:
        load_config(str(small))
    assert len(str(err.value)) < 300
    with pytest.raises(ConfigError, match="run_name") as err:
        load_config(None, {"run_name": "x/" * 100_000})
    assert len(str(err.value)) < 300


@pytest.mark.parametrize("setting", ["seeds", "search.test_seeds", "search.repeats", "search.folds",
                                     "selection.folds", "search.num_samples"])
def test_the_settings_that_multiply_work_are_bounded(setting):
    with pytest.raises(ConfigError, match=rf"{setting}: must be <="):
        load_config(None, {setting: 1_000_000})


# parameters that share a setting's name and value by coincidence: another idea, not a restated default
NOT_A_SETTING = {("text_key", "dtype"),               # a cache address's compute dtype (part of stored keys)
                 ("train_head_streaming", "seed"),    # the fit's seed, not synthesis at scale's
                 ("embeddings_to_arrow", "dtype")}    # any column's dtype


def test_no_function_restates_a_settings_default():
    """One default per setting: a function parameter named as a setting either has no default or takes the
    setting's own (`RewardConfig.hidden_dim`), never the same value written again."""
    import ast
    import dataclasses
    from pathlib import Path

    from lens_ray import config
    defaults: dict[str, set[str]] = {}
    for obj in vars(config).values():
        if isinstance(obj, type) and dataclasses.is_dataclass(obj):
            for f in dataclasses.fields(obj):
                if f.default is not dataclasses.MISSING and f.default is not None:
                    defaults.setdefault(f.name, set()).add(repr(f.default))
    restated = []
    for path in sorted((Path(config.__file__).parent).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            a = node.args
            named = a.posonlyargs + a.args
            pairs = list(zip(named[len(named) - len(a.defaults):], a.defaults))
            pairs += [(k, d) for k, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
            for arg, default in pairs:
                try:
                    value = repr(ast.literal_eval(default))
                except ValueError:
                    continue                                   # a name: the setting's own default, say
                if value in defaults.get(arg.arg, ()) and (node.name, arg.arg) not in NOT_A_SETTING:
                    restated.append(f"{path.name}:{node.lineno} {node.name}({arg.arg}={value})")
    assert not restated, restated
