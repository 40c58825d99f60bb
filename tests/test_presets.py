"""The config has one source of truth for its defaults: the dataclasses (a docstring per field)
and the files Hydra composes agree, a preset sets only what differs, each group's options compose
from its base, and a recipe is an experiment, not a model."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import shutil
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from hydra.utils import get_class
from lightning.pytorch.callbacks import EarlyStopping
from omegaconf import OmegaConf

from article_gpt.config.keys import check_added_key
from article_gpt.config.rules import GENERATE_RULES, TRAIN_RULES, validate, validate_generate
from article_gpt.errors import ConfigError
from article_gpt.model.gpt import GPT, GPTConfig
from article_gpt.training.build import build_trainer
from article_gpt.training.module import GPTModule, OptimConfig, SampleConfig, optim_config
from article_gpt.training.optim import MuonConfig

CONF = ROOT / "conf"
MODEL_PRESETS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
TRAINER_PRESETS = sorted(p.stem for p in (CONF / "trainer").glob("*.yaml") if p.stem != "default")
OPTIMIZERS = sorted(p.stem for p in (CONF / "optim").glob("*.yaml"))
FIELDS = [f.name for f in dataclasses.fields(GPTConfig)]


def compose_train(*overrides: str, conf: Path = CONF):
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def load(path: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path))


def defaults_of(cls) -> dict:
    """A dataclass's defaults as a config file writes them (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cls()).items()}


# ---- the dataclasses and the files agree ---------------------------------------------------------
def test_model_default_yaml_is_gpt_config_defaults():
    """conf/model/default.yaml, under every model preset, lists GPTConfig's fields with its defaults,
    in its order (before, nothing tied the presets' values to the dataclass's)."""
    assert list(load(CONF / "model" / "default.yaml").items()) == list(defaults_of(GPTConfig).items())


def test_python_train_py_trains_tiny_with_its_training_choices():
    cfg = OmegaConf.to_container(compose_train().model)
    assert cfg == {**defaults_of(GPTConfig), "dropout": 0.1, "loss_chunk_size": 1024}
    assert cfg == dataclasses.asdict(GPTConfig(**load(CONF / "model" / "tiny.yaml")))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_optim_file_is_its_class_defaults(name):
    """conf/optim/<name>.yaml names an OptimConfig class in _target_ and lists its fields with its defaults."""
    fields = load(CONF / "optim" / f"{name}.yaml")
    cls = get_class(fields.pop("_target_"))
    assert issubclass(cls, OptimConfig)
    assert fields == defaults_of(cls)


def test_sample_section_is_sample_config_defaults():
    assert load(CONF / "train.yaml")["sample"] == defaults_of(SampleConfig)


@pytest.mark.parametrize("cls", [GPTConfig, OptimConfig, MuonConfig, SampleConfig], ids=lambda c: c.__name__)
def test_every_field_has_a_docstring(cls):
    (node,) = ast.parse(inspect.getsource(cls)).body
    documented = {a.target.id for a, doc in zip(node.body, node.body[1:])
                  if isinstance(a, ast.AnnAssign) and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)}
    inherited = {f.name for base in cls.__mro__[1:] if dataclasses.is_dataclass(base) for f in dataclasses.fields(base)}
    assert documented == {f.name for f in dataclasses.fields(cls)} - inherited  # a subclass documents its own


# ---- model presets: only what differs, only model keys, every field settable ---------------------
@pytest.mark.parametrize("name", [n for n in MODEL_PRESETS if n != "default"])
def test_a_model_preset_sets_only_what_differs_from_the_defaults(name):
    """One place for a default: a preset repeating one of GPTConfig's would silently disagree with it
    once the default changes. Read on its own (scripts/benchmarks), a preset is GPTConfig(**preset)."""
    preset = load(CONF / "model" / f"{name}.yaml")
    preset.pop("defaults", None)
    pretrained = preset.pop("pretrained", None)
    defaults = defaults_of(GPTConfig)
    assert set(preset) <= set(defaults), f"model={name}: not GPTConfig fields: {set(preset) - set(defaults)}"
    assert not {k for k, v in preset.items() if v == defaults[k]}, f"model={name} repeats GPTConfig's defaults"
    if pretrained is None:
        assert OmegaConf.to_container(compose_train(f"model={name}").model) == {**defaults, **preset}


@pytest.mark.parametrize("name", MODEL_PRESETS)
def test_a_model_preset_holds_only_model_keys(name):
    """A recipe (optimizer, batch, epochs) is an experiment (conf/experiment/), not a model preset."""
    base, cfg = (OmegaConf.to_container(c) for c in (compose_train(), compose_train(f"model={name}")))
    assert {k for k in base if base[k] != cfg[k]} <= {"model"}  # unresolved: data.block_size is ${model.block_size}
    assert "@package" not in (CONF / "model" / f"{name}.yaml").read_text()


# one valid value per field, unlike its default and the presets' values
NEW_VALUES = {"vocab_size": 50304, "block_size": 32, "embedding_dim": 64, "num_layers": 2, "heads": 2, "head_size": 16,
              "dropout": 0.2, "bias": False, "tie_weights": False, "loss_chunk_size": 512, "gelu_approximate": "tanh",
              "position": "rope", "qk_norm": True, "mlp_activation": "relu2", "zero_init_proj": True,
              "logit_softcap": 30.0}


@pytest.mark.parametrize("name", MODEL_PRESETS)
def test_every_model_field_is_settable_without_plus(name):
    """`model.gelu_approximate=tanh` failed with 'no such key' on every preset but the pretrained ones."""
    assert set(NEW_VALUES) == set(FIELDS)
    cfg = compose_train(f"model={name}", *(f"model.{k}={v}" for k, v in NEW_VALUES.items()))
    assert {k: cfg.model[k] for k in FIELDS} == NEW_VALUES
    if not cfg.model.get("pretrained"):
        validate(cfg)
        GPTConfig(**cfg.model)


# ---- experiments: the fine-tuning recipes --------------------------------------------------------
RECIPE = {"optim.lr": 1.0e-4, "optim.warmup_steps": 5, "dataloader.batch_size": 4, "trainer.max_epochs": 4}


@pytest.mark.parametrize(("experiment", "model", "hub", "recipe"), [
    ("finetune_gpt2", "gpt2_pretrained", "gpt2", {}),
    ("finetune_gpt2_medium", "gpt2_medium_pretrained", "gpt2-medium", {"optim.lr": 5.0e-5, "dataloader.batch_size": 2}),
])
def test_finetune_experiments_are_the_old_pretrained_presets(experiment, model, hub, recipe):
    """experiment=finetune_gpt2 composes what model=gpt2_pretrained did: its model and its recipe;
    the rest as the defaults. experiment=finetune_gpt2_medium changes the model, lr and batch."""
    cfg, base, bare = (OmegaConf.to_container(compose_train(*o))
                       for o in ([f"experiment={experiment}"], [], [f"model={model}"]))
    assert cfg["model"] == bare["model"] and cfg["model"]["pretrained"] == hub
    for key, value in {**RECIPE, **recipe}.items():
        section, name = key.split(".")
        assert cfg[section][name] == value, key
    for section in ("optim", "dataloader", "trainer"):  # nothing else of the defaults changes
        for key in base[section]:
            if f"{section}.{key}" not in RECIPE:
                assert cfg[section][key] == base[section][key], f"{section}.{key}"
    assert {k for k in base if base[k] != cfg[k]} == {"model", "optim", "dataloader", "trainer"}


def test_finetune_recipe_over_another_trainer_keeps_its_epochs():
    """As model=gpt2_pretrained did: the recipe comes after the trainer preset."""
    cfg = compose_train("experiment=finetune_gpt2", "trainer=debug")
    assert cfg.trainer.max_epochs == 4 and cfg.trainer.max_steps == 6 and cfg.dataloader.batch_size == 4


# ---- trainer presets compose from trainer/default.yaml ------------------------------------------
def trainer_chain(name: str) -> list[str]:
    """The trainer files a preset composes, itself first."""
    chain = [name]
    while True:
        parents = [d for d in load(CONF / "trainer" / f"{chain[-1]}.yaml").get("defaults", []) if d != "_self_"]
        if not parents:
            return chain
        (parent,) = parents
        chain.append(parent)


@pytest.mark.parametrize("name", TRAINER_PRESETS)
def test_every_trainer_preset_composes_from_default(name):
    assert trainer_chain(name)[-1] == "default"
    base, cfg = load(CONF / "trainer" / "default.yaml"), compose_train(f"trainer={name}").trainer
    assert set(base) <= set(cfg) and cfg._target_ == base["_target_"] == "lightning.pytorch.Trainer"
    own = {k for n in trainer_chain(name)[:-1] for k in load(CONF / "trainer" / f"{n}.yaml")}
    assert all(cfg[k] == v for k, v in base.items() if k not in own)


# ---- one file per callback ------------------------------------------------------------------------
CALLBACK_FILES = sorted(p.stem for p in (CONF / "callbacks").glob("*.yaml") if p.stem not in ("default", "none"))


def test_one_file_per_callback():
    assert CALLBACK_FILES == ["early_stopping", "model_checkpoint", "progress_bar"]
    for name in CALLBACK_FILES:
        assert list(load(CONF / "callbacks" / f"{name}.yaml")) == [name]  # ~callbacks.<name> drops the file's callback
    assert list(compose_train().callbacks) == ["model_checkpoint", "early_stopping", "progress_bar"]
    assert compose_train("callbacks=none").callbacks == {}


def test_a_run_without_early_stopping(run_cli, outputs, tmp_path):
    """`~callbacks.early_stopping`: composed without the key, and the run trains without EarlyStopping
    (a budget sweep spends its budget) while keeping its checkpoints."""
    cfg = compose_train("~callbacks.early_stopping", f"paths.output_dir={tmp_path}")
    assert list(cfg.callbacks) == ["model_checkpoint", "progress_bar"]
    assert not any(isinstance(c, EarlyStopping) for c in build_trainer(cfg, [], [], tmp_path).callbacks)
    default = build_trainer(compose_train(f"paths.output_dir={tmp_path}"), [], [], tmp_path)
    assert any(isinstance(c, EarlyStopping) for c in default.callbacks)
    run_cli("train.py", *TINY, "logger=none", "~callbacks.early_stopping", "callbacks.progress_bar.refresh_rate=0")
    (run_dir,) = (outputs / "runs").iterdir()
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["callbacks"]
    assert any(k.startswith("ModelCheckpoint") for k in saved)
    assert not any("EarlyStopping" in k for k in saved), list(saved)


# ---- the optim group -----------------------------------------------------------------------------
def tiny_module(**kwargs) -> GPTModule:
    torch.manual_seed(0)
    model = dict(embedding_dim=16, num_layers=1, heads=2, head_size=8, block_size=16, dropout=0.0)
    return GPTModule(model=model, **kwargs)


def optimizer_of(module: GPTModule, steps: int = 10) -> torch.optim.Optimizer:
    module.trainer = types.SimpleNamespace(estimated_stepping_batches=steps)
    return module.configure_optimizers()["optimizer"]


def test_optim_adamw_is_the_default_and_its_keys_are_the_old_ones():
    cfg = compose_train("optim.lr=2e-3", "optim.weight_decay=0.05", "optim.betas=[0.8,0.9]",
                        "optim.warmup_steps=3", "optim.min_lr_ratio=0.2")
    validate(cfg)
    module = tiny_module(optim=OmegaConf.to_container(cfg.optim, resolve=True))
    assert type(module.optim) is OptimConfig
    opt = optimizer_of(module)
    assert type(opt) is torch.optim.AdamW and opt.defaults["fused"]
    assert (opt.defaults["betas"], opt.param_groups[0]["initial_lr"]) == ((0.8, 0.9), 2e-3)
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 0.05]  # >= 2-D weights only


def test_optim_section_of_an_older_checkpoint_builds_adamw():
    """Checkpoints written before conf/optim/ have no _target_ in hyper_parameters.optim."""
    old = {"lr": 3e-3, "weight_decay": 0.1, "betas": [0.9, 0.95], "warmup_steps": 20, "min_lr_ratio": 0.1}
    assert optim_config(old) == OptimConfig(lr=3e-3)
    assert type(optimizer_of(tiny_module(optim=old))) is torch.optim.AdamW
    with pytest.raises(TypeError, match=r"optim\._target_=article_gpt\.model\.gpt\.GPTConfig: not an OptimConfig"):
        optim_config({"_target_": "article_gpt.model.gpt.GPTConfig"})


@dataclass
class SGDConfig(OptimConfig):
    """A second optimizer as Muon would be added: this class and one conf/optim/sgd.yaml."""

    momentum: float = 0.9
    """SGD's momentum."""

    def build(self, model: GPT, device: torch.device) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.param_groups(self.weight_decay), lr=self.lr, momentum=self.momentum)


def test_a_second_optimizer_is_one_file_and_one_class(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    fields = OmegaConf.to_yaml({"_target_": f"{__name__}.SGDConfig", **defaults_of(SGDConfig)})
    (conf / "optim" / "sgd.yaml").write_text(fields)
    cfg = compose_train("optim=sgd", "optim.momentum=0.5", conf=conf)
    validate(cfg)
    with pytest.raises(ConfigError, match=r"\+optim\.nesterov=True: not read by anything; optim \(SGDConfig\) takes"):
        check_added_key(cfg, "optim.nesterov", True)
    module = tiny_module(optim=OmegaConf.to_container(cfg.optim, resolve=True))
    assert module.optim == SGDConfig(momentum=0.5)
    opt = optimizer_of(module)
    assert type(opt) is torch.optim.SGD and opt.defaults["momentum"] == 0.5


# ---- one sampling rule: training samples and generate.py ----------------------------------------
def test_training_samples_and_generate_py_share_keys_defaults_and_rules():
    generate = load(CONF / "generate.yaml")
    sample = compose_train().sample
    for key, value in {"temperature": 0.8, "top_k": 50, "top_p": 0.95}.items():
        assert generate[key] == sample[key] == getattr(SampleConfig(), key) == value, key
        if key != "temperature":  # temperature: [0, 100] in training, >= 0 in generate.py (as before)
            assert GENERATE_RULES[key] is TRAIN_RULES[f"sample.{key}"]
    validate(compose_train("sample.top_p=null"))
    validate_generate(OmegaConf.create({**generate, "top_p": 1}))
    for bad in ("0", "1.5", "high"):
        with pytest.raises(ConfigError, match=rf"^sample\.top_p={bad}: must be a number in \(0, 1\] or null$"):
            validate(compose_train(f"sample.top_p={bad}"))


def test_training_samples_are_drawn_with_top_p():
    """A nucleus of one token is greedy decoding, even at a temperature that otherwise draws at random."""
    module = tiny_module(sample={"max_new_tokens": 8, "temperature": 0})
    greedy = module.sample()
    module.sample_cfg = SampleConfig(max_new_tokens=8, temperature=100.0, top_k=None, top_p=1e-9)
    assert module.sample() == greedy
    module.sample_cfg = SampleConfig(max_new_tokens=8, temperature=100.0, top_k=None, top_p=None)
    assert module.sample() != greedy  # the temperature does draw at random


# ---- resume_sweep is no config key ---------------------------------------------------------------
def test_resume_sweep_is_rewritten_before_hydra_not_a_key(run_cli, tmp_path):
    """It was always null after composition: train.py turns it into the sweep's own overrides."""
    assert "resume_sweep" not in compose_train()
    with pytest.raises(HydraException, match="resume_sweep"):
        compose_train(f"resume_sweep={tmp_path}")  # only train.py's rewrite reads it
    proc = run_cli("train.py", f"resume_sweep={tmp_path}", check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        f"error: resume_sweep={tmp_path}: not a sweep directory (no multirun.yaml)"]
    proc = run_cli("train.py", f"resume_sweeps={tmp_path}", check=False)  # a typo
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("error: resume_sweeps: no such key in the config")
