"""The Hydra config tree: every option of every group composes, validates and instantiates;
bad values are refused with a ConfigError naming the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from article_gpt.config.rules import validate
from article_gpt.config.shape import with_pretrained_shape
from article_gpt.data.corpus import TextDataModule
from article_gpt.errors import ConfigError
from article_gpt.tracking import loggers as tracking
from article_gpt.training.build import build_trainer

CONF = ROOT / "conf"
# The options the issue names; any option added later is composed too (see OPTIONS).
REQUIRED = {
    "model": {"tiny", "small", "medium", "gpt2", "seed"},
    "data": {"articles", "split"},
    "trainer": {"cpu", "gpu", "debug"},
    "logger": {"wandb", "csv", "tensorboard", "none"},
    "callbacks": {"default", "none"},
    "experiment": {"reproduce_seed"},
    "debug": {"fast"},
}
OPTIONS = [(group, p.stem) for group in REQUIRED for p in sorted((CONF / group).glob("*.yaml"))]
# trainer=ddp's 2 devices are checked against the machine's cores: that case runs with all of them
OPTION_PARAMS = [pytest.param(g, o, id=f"{g}={o}", marks=[pytest.mark.all_cores] * ((g, o) == ("trainer", "ddp")))
                 for g, o in OPTIONS]


def compose_train(tmp_path: Path, *overrides: str, hydra: bool = False):
    """``python train.py <overrides>``'s config, with the run dir a Hydra app would make pinned to tmp_path."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=[*overrides, f"paths.output_dir={tmp_path}"],
                       return_hydra_config=hydra)


def test_required_options_exist():
    found = {}
    for group, option in OPTIONS:
        found.setdefault(group, set()).add(option)
    for group, options in REQUIRED.items():
        assert options <= found.get(group, set()), f"conf/{group} lacks {options - found.get(group, set())}"


@pytest.mark.parametrize(("group", "option"), OPTION_PARAMS)
def test_every_option_composes_validates_and_instantiates(tmp_path, group, option):
    cfg = compose_train(tmp_path, f"{group}={option}")
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="trainer.accelerator=gpu: .*use trainer=cpu"):
            validate(with_pretrained_shape(cfg))
        return
    if cfg.trainer.accelerator == "mps" and not torch.backends.mps.is_available():
        with pytest.raises(ConfigError, match="trainer.accelerator=mps: .*use trainer=cpu"):
            validate(with_pretrained_shape(cfg))
        return
    if cfg.model.get("pretrained") and not Path(str(cfg.model.pretrained)).is_dir():
        # a hub name needs a network the tests never have (tests/test_pretrained.py loads local dirs)
        with pytest.raises(ConfigError, match=f"model.pretrained={cfg.model.pretrained}: .*offline, pass a local dir"):
            validate(with_pretrained_shape(cfg))
        return
    if (group, option) == ("data", "medium") and not Path(str(cfg.data.train.path)).is_dir():
        # no Medium export imported on this machine: the one line says how to import one
        with pytest.raises(ConfigError, match=r"data.train.path=.*my_articles: .*run python scripts/import_medium.py"):
            validate(cfg)
        return
    validate(with_pretrained_shape(cfg))
    resolved = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves

    dm = instantiate(cfg.data, _convert_="all")
    assert isinstance(dm, TextDataModule)
    assert dm.block_size == cfg.model.block_size and dm.tokenizer == cfg.tokenizer
    assert dm.loader.batch_size == cfg.dataloader.batch_size and dm.seed == cfg.seed
    assert (dm.val_cfg.path is None) == (dm.val_fraction is not None)

    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values()]
    trainer = instantiate(cfg.trainer, logger=False, callbacks=callbacks, default_root_dir=str(tmp_path))
    assert trainer.max_epochs == cfg.trainer.max_epochs and trainer.max_steps == cfg.trainer.max_steps
    if cfg.callbacks.get("model_checkpoint"):  # null: an experiment without checkpoints (isoflop)
        assert trainer.checkpoint_callback.dirpath == str(tmp_path / "checkpoints")

    if "wandb" not in resolved["logger"]:  # W&B starts a run: the end-to-end tests cover it
        loggers = tracking.build_loggers(resolved["logger"], tmp_path, "group", "name", resolved)
        assert sorted(type(lg).__name__ for lg in loggers) == sorted(
            {"csv": "CSVLogger", "tensorboard": "TensorBoardLogger"}[k] for k in resolved["logger"])
        for lg in loggers:
            lg.finalize("success")


def test_data_follows_model_and_top_level_keys(tmp_path):
    cfg = compose_train(tmp_path, "model=small", "seed=7", "dataloader.batch_size=3")
    assert cfg.data.block_size == 256 and cfg.data.seed == 7 and cfg.data.dataloader.batch_size == 3
    assert cfg.data.train.path == f"{cfg.paths.data_dir}/train.txt"
    assert cfg.data.cache_dir.startswith(cfg.paths.log_dir)
    split = compose_train(tmp_path, "data=split")
    assert split.data.val.path is None and split.data.val_fraction == 0.1
    assert split.data.train.path == split.paths.data_dir


def test_experiment_reproduce_seed(tmp_path):
    cfg = compose_train(tmp_path, "experiment=reproduce_seed")
    validate(cfg)
    m = cfg.model
    assert (m.embedding_dim, m.heads, m.head_size, m.block_size) == (100, 2, 50, 8)
    assert m.num_layers == 12 and not m.tie_weights  # the rest of model=seed
    assert cfg.dataloader.batch_size == 2 and cfg.trainer.max_epochs == 100
    assert cfg.data.train.max_samples == 100 and cfg.data.val.max_samples == 100


def test_debug_fast(tmp_path):
    cfg = compose_train(tmp_path, "debug=fast")
    validate(cfg)
    assert cfg.logger == {} and cfg.trainer.max_steps == 6 and cfg.trainer.limit_train_batches == 3
    assert cfg.model.num_layers == 1 and cfg.sample.max_new_tokens == 8


def test_run_dir_is_unique_to_the_microsecond(tmp_path):
    dirs = []
    for _ in range(2):
        cfg = compose_train(tmp_path, "paths.log_dir=/logs", hydra=True)
        dirs.append(cfg.hydra.run.dir)
        assert re.fullmatch(r"/logs/runs/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d{6}-[0-9a-f]{6}", cfg.hydra.run.dir)
        assert re.fullmatch(r"/logs/sweeps/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-[0-9a-f]{6}", cfg.hydra.sweep.dir)
    assert dirs[0] != dirs[1]


BAD = [
    ("model.heads=0", "model.heads=0"),
    ("model.block_size=-1", "model.block_size=-1"),
    ("model.embedding_dim=0", "model.embedding_dim=0"),
    ("model.head_size=2.5", "model.head_size=2.5"),
    ("model.num_layers=true", "model.num_layers=True"),
    ("model.dropout=1.0", "model.dropout=1.0"),
    ("model.vocab_size=1000", "model.vocab_size=1000"),
    ("dataloader.batch_size=0", "dataloader.batch_size=0"),
    ("dataloader.num_workers=-1", "dataloader.num_workers=-1"),
    ("trainer.precision=bf17", "trainer.precision=bf17"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0"),
    ("data.train.path=null", "data.train.path"),
    ("data.stride=0", "data.stride=0"),
    ("data.train.max_samples=-5", "data.train.max_samples=-5"),
    ("data.val_fraction=0.1", "data.val.path="),  # articles has val.path: only one may be set
    ("logger.wandb.mode=maybe", "logger.wandb.mode=maybe"),
    ("sample.temperature=-1", "sample.temperature=-1"),
    ("sample.top_k=0", "sample.top_k=0"),
    ("sample.max_new_tokens=-1", "sample.max_new_tokens=-1"),
    ("optim.lr=0", "optim.lr=0"),
    ("optim.warmup_steps=-1", "optim.warmup_steps=-1"),
    ("optim.min_lr_ratio=2", "optim.min_lr_ratio=2"),
    ("tokenizer=no_such_encoding", "tokenizer='no_such_encoding'"),
]
BAD_SPLIT = [("data.val_fraction=1.5", "data.val_fraction=1.5"), ("data.val_fraction=0", "data.val_fraction=0")]


@pytest.mark.parametrize(("override", "message"), BAD, ids=[o for o, _ in BAD])
def test_bad_value_is_a_config_error_naming_the_key(tmp_path, override, message):
    cfg = compose_train(tmp_path, override)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("override", "message"), BAD_SPLIT, ids=[o for o, _ in BAD_SPLIT])
def test_bad_val_fraction_in_split_mode(tmp_path, override, message):
    cfg = compose_train(tmp_path, "data=split", override)
    with pytest.raises(ConfigError, match=re.escape(message) + r": must be a number in \(0.0, 1.0\)"):
        validate(cfg)


def test_callbacks_none_means_no_checkpoints_and_no_progress_bar(tmp_path):
    cfg = compose_train(tmp_path, "callbacks=none")
    assert cfg.callbacks == {}
    trainer = build_trainer(cfg, [], [], tmp_path)
    assert trainer.checkpoint_callbacks == [] and trainer.progress_bar_callback is None


def test_default_callbacks_checkpoint_best_and_last(tmp_path):
    trainer = build_trainer(compose_train(tmp_path), [], [], tmp_path)
    (ckpt,) = trainer.checkpoint_callbacks
    assert (ckpt.monitor, ckpt.save_last, ckpt.filename) == ("val/loss", True, "best")


# ---- a run with no end; the optimized metric (issue 11) --------------------------------------------
@pytest.mark.parametrize("overrides", [
    ["trainer.max_epochs=-1"],  # max_steps is -1 in trainer=cpu
    ["trainer.max_epochs=-1", "trainer.max_steps=null"],
    ["trainer.max_epochs=null", "+trainer.max_time=00:01:00:00"],  # with max_time, null epochs = no limit
])
def test_a_run_with_no_end_is_refused_in_one_line(tmp_path, overrides):
    cfg = compose_train(tmp_path, *overrides)
    with pytest.raises(ConfigError, match=r"^trainer\.max_epochs=(-1|None) with trainer\.max_steps=(-1|None): "
                                          r"the run has no end") as err:
        validate(cfg)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("overrides", [
    ["trainer.max_epochs=-1", "trainer.max_steps=100"],
    ["trainer.max_epochs=null"],  # Lightning's default: 1000 epochs
    ["trainer.max_epochs=-1", "budget.tokens=1e6"],  # the budget ends it
])
def test_runs_with_an_end_are_accepted(tmp_path, overrides):
    validate(compose_train(tmp_path, *overrides))


def test_optimized_metric_must_be_a_metrics_json_number(tmp_path):
    for name in ("val_loss", "train_loss", "tokens_per_sec", "elapsed_s"):
        validate(compose_train(tmp_path, f"optimized_metric={name}"))
    with pytest.raises(ConfigError) as err:
        validate(compose_train(tmp_path, "optimized_metric=val/loss"))
    assert str(err.value).startswith("optimized_metric=val/loss: must be one of val_loss, val_ppl, ")
