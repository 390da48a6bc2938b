import pytest

from lens_ray.cli import config_from_args, run_parser
from lens_ray.config import ConfigError, load_config


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "cfg.yaml"
    f.write_text("name: from-yaml\nfactors: [2, 4]\nvae:\n  beta: 0.5\n  hidden_dims: [128, 64]\nsynth:\n  residual: true\n")
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
