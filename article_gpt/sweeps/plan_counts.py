"""What one job of a plan will record, counted without torch: its parameters and FLOPs per token
(model/accounting.py, the model's own arithmetic), and the optimizer steps, tokens and training
FLOPs of its budget or its epoch and step limits over the corpus (data/ids.py, as the data module
cuts it; the budget arithmetic of training/budget.py, in model/accounting.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from article_gpt.model import accounting
from article_gpt.runs.naming import parse_overrides
from article_gpt.sweeps import plan_speed
from article_gpt.sweeps.records import display_value


@dataclass
class Row:
    """One job of the plan: what its run will record."""

    overrides: list[str]
    swept: dict[str, str]  # the swept keys' values of this job
    params_total: int
    params_non_embedding: int
    flops_per_token: int
    steps: int | None  # None: only trainer.max_time ends it
    tokens: int | None
    limit: str  # what ends the run: budget.tokens, budget.flops, trainer.max_steps or trainer.max_epochs
    threads: int
    world: int  # training processes (DDP ranks)
    seconds: float | None = None

    @property
    def train_flops(self) -> int | None:
        return None if self.tokens is None else self.tokens * self.flops_per_token



class JobCounter:
    """What rows share: the corpus counted once per split, the cores and the launcher."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg, self.corpora, self.train_tokens = cfg, {}, None

    def corpus_line(self) -> str:
        data = self.cfg.data
        return f"{data.train.path}: {self.train_tokens or 0:,} training tokens"

    def row(self, job_cfg: DictConfig, job: list[str], swept: list[str]) -> Row:
        from article_gpt.parallel.cores import local_processes

        resolved = {k: OmegaConf.to_container(job_cfg[k], resolve=True) if OmegaConf.is_config(job_cfg[k])
                    else job_cfg[k] for k in ("model", "data", "dataloader", "trainer", "budget", "threads")}
        model, data, trainer = resolved["model"], resolved["data"], resolved.get("trainer") or {}
        counts = accounting.param_counts(**model)
        fpt = accounting.flops_per_token(counts["params_matmul"], model["num_layers"],
                                         model["heads"] * model["head_size"], model["block_size"])
        world = local_processes(job_cfg)
        windows = self._windows(data)
        loader = resolved["dataloader"]
        limit = trainer.get("limit_train_batches")
        per_step = accounting.epoch_step_tokens(windows, loader["batch_size"], data["block_size"], world,
                                                bool(loader.get("drop_last")), 1.0 if limit is None else limit,
                                                trainer.get("accumulate_grad_batches") or 1)
        end, limit_key = _run_end(resolved.get("budget") or {}, trainer, per_step, fpt)
        values = parse_overrides(job)
        return Row(job, {k: display_value(values.get(k, "")) for k in swept}, counts["params_total"],
                   counts["params_non_embedding"], fpt, end[0] if end else None, end[1] if end else None,
                   limit_key, plan_speed.threads_per_process(self.cfg, resolved, world), world)

    def _windows(self, data: dict) -> int:
        """Training windows per epoch, as the data module (data/corpus.py) cuts them."""
        from article_gpt.data import ids as corpus
        from article_gpt.data.tokenizer import get_encoding

        block, val_path = data["block_size"], (data.get("val") or {}).get("path")
        key = (data["train"]["path"], data["tokenizer"], val_path, data.get("val_fraction"),
               data.get("whole_documents"), None if val_path else block)
        if key not in self.corpora:
            cache = data.get("cache_dir")
            cache = cache if cache and Path(cache).is_dir() else None  # makes no folder: no cache yet, in memory
            ids = corpus.tokenize_documents(corpus.read_documents(data["train"]["path"]), data["tokenizer"], cache)
            if not val_path:
                eot = get_encoding(data["tokenizer"]).eot_token
                whole = bool(data.get("whole_documents"))
                ids = corpus.split_tokens(ids, data["val_fraction"], eot, block + 1, whole)[0]
            self.corpora[key] = ids
            self.train_tokens = len(ids)
        ids, stride = self.corpora[key], data.get("stride") or block
        cap = (data.get("train") or {}).get("max_samples")
        if data.get("windows", "random") == "documents":  # the data module's own tiling
            eot = get_encoding(data["tokenizer"]).eot_token
            return len(corpus.document_starts(ids, eot, block, stride)[:cap])
        return len(corpus.window_starts(len(ids), block, stride)[:cap])


def _run_end(budget: dict, trainer: dict, per_step: list[int], fpt: int) -> tuple[tuple[int, int] | None, str]:
    """(steps, tokens) of the run and the setting that ends it, as training/budget.py and Lightning end it."""
    tokens = accounting.budget_tokens(budget.get("tokens"), budget.get("flops"), fpt)
    if tokens is not None:
        by_flops = budget.get("flops") is not None and tokens < (budget.get("tokens") or math.inf)
        return accounting.steps_for_budget(tokens, per_step), "budget.flops" if by_flops else "budget.tokens"
    max_steps = trainer.get("max_steps")
    end = accounting.steps_for_limits(per_step, trainer.get("max_epochs"), max_steps)
    if end is None:
        return None, "trainer.max_time"
    return end, "trainer.max_steps" if max_steps not in (None, -1) and end[0] == max_steps else "trainer.max_epochs"
