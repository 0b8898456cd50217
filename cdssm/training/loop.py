"""The training loop: ``train(config)`` runs (or resumes) one run end to end.

One optimizer step s (s = 0 … S − 1) on every rank:
  for each of the A = grad_accum micro-batches b: out_b = model(x_b, labels=x_b) under autocast;
      (out_b.loss / A).backward()  (loss = CE + λ_met·mean υ: the metabolic loss is the model's),
      gradients reduced across ranks on the last micro-batch only;
  g = clip_grad_norm_(θ, grad_clip); stop if loss or g is not finite (the last checkpoint stays);
  AdamW step, schedule step;
  ema ← update with e = mean over ranks of (1/A)·Σ_b out_b.state_energy  (once per step);
then every ``eval_every`` steps the val loss and perplexity, every ``checkpoint_every`` steps a
checkpoint. A resumed run restores model, optimizer, schedule, loader positions and RNG states,
so its losses equal those of an uninterrupted run.
"""

import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict,
                                                     set_model_state_dict,
                                                     set_optimizer_state_dict)

from ..models.registry import ARCHITECTURES
from .checkpoint import (checkpoint_path, load_checkpoint, rng_state, save_checkpoint,
                         set_rng_state)
from .config import ABLATION_DEFAULTS, TrainConfig
from .data import load_meta, shard_path
from .flops import model_flops_per_token
from .metrics import MetricsLog
from .optim import build_optimizer
from .parallel import (ParallelInfo, all_reduce_mean, close_parallel, gather_objects,
                       gradient_sync, init_parallel, wrap_data_parallel)
from .precision import (autocast, checkpoint_blocks, convert_to_float8, resolve_device,
                        resolve_precision)

FULL_STATE = StateDictOptions(full_state_dict=True, cpu_offload=True)
# Fields a resumed run must share with its checkpoint (model shape and data order).
RESUME_FIELDS = ("arch", "d_model", "n_layers", "seq_len", "state_pairs", "batch_size",
                 "grad_accum", "packed", "seed", *ABLATION_DEFAULTS)


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite."""


@dataclass
class RunResult:
    """What ``train`` returns: per-step train losses (the all-rank mean of CE + aux), the
    evaluations [(step, val loss)], the mean tokens/s after the first step and the model
    TFLOP/s it makes (``cdssm.training.flops``), and the model."""

    losses: list = field(default_factory=list)
    val_losses: list = field(default_factory=list)
    tokens_per_s: float = float("nan")
    model_tflops: float = float("nan")
    model: Optional[nn.Module] = None


def read_data_meta(data_dir: str) -> dict:
    """``data_dir/meta.json`` (``cdssm.training.data.load_meta``), after checking that the
    train and val shards are there."""
    meta = load_meta(data_dir)
    for split in ("train", "val"):
        if not shard_path(data_dir, split).is_file():
            raise ValueError(f"data_dir: no {split}.bin in {data_dir!r}; prepare the shards "
                             f"with `cdssm data prepare --out {data_dir}` (with a val split: "
                             f"--val-fraction > 0)")
    return meta


def build_lm(config: TrainConfig, vocab_size: int) -> nn.Module:
    """The freshly initialised LM of ``config.arch`` (context_length = seq_len; cdssm: with the
    state pairs and ablation switches)."""
    cls = ARCHITECTURES[config.arch]
    extra = {}
    if config.arch == "cdssm":
        extra = {k: getattr(config, k) for k in ("state_pairs", *ABLATION_DEFAULTS)}
    return cls(cls.config_class(config.d_model, config.n_layers, config.seq_len, vocab_size,
                                **extra))


def device_batch(batch, device: torch.device) -> dict:
    """The model's keyword arguments for a loader ``Batch``, moved to ``device``.

    A packed batch's cu_seqlens (N + 1,) is marked dynamic in N: the number of documents
    changes from batch to batch, and without the mark the first new N recompiles the whole
    compiled model (once, then Dynamo makes N symbolic by itself): 51 s for a 4-layer d 256
    CD-SSM on an H100, which made a 40-step packed run average 6k instead of 355k tokens/s
    (docs/benchmarks.md). With it, the first compilation is already for any N.
    """
    move = dict(device=device, non_blocking=True)
    cu = None
    if batch.cu_seqlens is not None:
        cu = batch.cu_seqlens.to(**move)
        torch._dynamo.maybe_mark_dynamic(cu, 0)
    return dict(input_ids=batch.input_ids.to(**move), labels=batch.labels.to(**move),
                cu_seqlens=cu)


def default_loader_factory():
    """``cdssm.training.loader.TokenLoader`` (imported when a run starts)."""
    from .loader import TokenLoader

    return TokenLoader


def _check_resume(config: TrainConfig, saved: dict, world_size: int) -> None:
    before = {k: saved["config"].get(k, ABLATION_DEFAULTS.get(k)) for k in RESUME_FIELDS}
    changed = {k: (before[k], getattr(config, k)) for k in RESUME_FIELDS
               if before[k] != getattr(config, k)}
    if saved["world_size"] != world_size:
        changed["world_size"] = (saved["world_size"], world_size)
    if changed:
        raise ValueError("resume: the checkpoint's run differs in "
                         + ", ".join(f"{k} ({a!r} → {b!r})" for k, (a, b) in changed.items()))


class Trainer:
    """One run's state: model, optimizer, schedule, loaders, log. ``train`` drives it."""

    def __init__(self, config: TrainConfig, info: ParallelInfo, device: torch.device,
                 make_loader: Optional[Callable], vocab_size: Optional[int] = None):
        self.config, self.info, self.device = config, info, device
        self.precision = resolve_precision(config.precision, config.float8, device)
        if vocab_size is None:
            vocab_size = read_data_meta(config.data_dir)["vocab_size"]
        self.total_steps = config.total_steps(info.world_size)
        torch.manual_seed(config.seed)  # the same initial weights on every rank
        self.model = build_lm(config, vocab_size).to(device)
        self.flops_per_token = model_flops_per_token(self.model, config.seq_len)
        rho = config.dynamics_lr_ratio or getattr(self.model.config, "dynamics_lr_ratio", 1.0)
        if config.float8:
            convert_to_float8(self.model)
        if config.activation_checkpointing:
            checkpoint_blocks(self.model)
        self.forward = wrap_data_parallel(self.model, device, info, config.compile)
        self.optimizer, self.scheduler = build_optimizer(
            self.model, config.lr, config.weight_decay, config.betas, rho, config.warmup_steps,
            self.total_steps, config.min_lr_ratio)
        make_loader = make_loader or default_loader_factory()
        loader_args = dict(seed=config.seed, packed=config.packed, rank=info.rank,
                           world_size=info.world_size)
        self.train_loader = make_loader(config.data_dir, "train", config.batch_size,
                                        config.seq_len, **loader_args)
        self.val_loader = make_loader(config.data_dir, "val", config.batch_size,
                                      config.seq_len, **loader_args)
        self.step = 0

    # ---- checkpoints ------------------------------------------------------------------------
    def save(self) -> None:
        """Writes the checkpoint (every rank takes part in gathering it; rank 0 writes)."""
        state = {
            "step": self.step, "config": self.config.to_dict(),
            "world_size": self.info.world_size,
            "model": get_model_state_dict(self.model, options=FULL_STATE),
            "optimizer": get_optimizer_state_dict(self.model, self.optimizer,
                                                  options=FULL_STATE),
            "scheduler": self.scheduler.state_dict(),
            "loader": gather_objects(self.train_loader.state_dict(), self.info),
            "rng": gather_objects(rng_state(), self.info),
        }
        if self.info.is_main:
            save_checkpoint(checkpoint_path(self.config.out_dir), state)

    def restore(self) -> None:
        saved = load_checkpoint(checkpoint_path(self.config.out_dir))
        _check_resume(self.config, saved, self.info.world_size)
        options = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.model, saved["model"], options=options)
        set_optimizer_state_dict(self.model, self.optimizer, saved["optimizer"], options=options)
        self.scheduler.load_state_dict(saved["scheduler"])
        # The optimizer's saved lr is the saved run's schedule; a resumed run may set a different
        # length (--steps), so take the first step's lr from this run's schedule.
        for group, base, factor in zip(self.optimizer.param_groups, self.scheduler.base_lrs,
                                       self.scheduler.lr_lambdas):
            group["lr"] = base * factor(self.scheduler.last_epoch)
        self.train_loader.load_state_dict(saved["loader"][self.info.rank])
        set_rng_state(saved["rng"][self.info.rank])
        self.step = saved["step"]

    def save_final_model(self) -> None:
        """``out_dir/final``: config.json + model.safetensors (``from_pretrained`` loads it)."""
        weights = get_model_state_dict(self.model, options=FULL_STATE)
        if self.info.is_main:
            model = build_lm(self.config, self.model.config.vocab_size)
            model.load_state_dict(weights)
            model.save_pretrained(os.path.join(self.config.out_dir, "final"))

    # ---- steps ------------------------------------------------------------------------------
    def _batch(self, batch) -> dict:
        return device_batch(batch, self.device)

    def train_step(self) -> dict:
        """One optimizer step (see the module docstring); returns its metrics."""
        accum = self.config.grad_accum
        loss = torch.zeros((), device=self.device)
        aux = torch.zeros((), device=self.device)
        energy = None
        for micro in range(accum):
            inputs = self._batch(self.train_loader.next_batch())
            with gradient_sync(self.forward, micro == accum - 1):
                with autocast(self.precision, self.device):
                    out = self.forward(**inputs)
                (out.loss / accum).backward()
            loss += out.loss.detach() / accum
            aux += out.aux_loss.detach() / accum
            if out.state_energy is not None:
                energy = out.state_energy / accum + (0 if energy is None else energy)
        max_norm = self.config.grad_clip or math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP2
            grad_norm = grad_norm.full_tensor()
        loss, aux = all_reduce_mean(loss, self.info).item(), all_reduce_mean(aux, self.info).item()
        grad_norm = grad_norm.item()
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            raise TrainingDiverged(
                f"step {self.step + 1}: loss {loss}, grad norm {grad_norm} is not finite; "
                f"stopped without updating. The last good checkpoint (if any) is "
                f"{checkpoint_path(self.config.out_dir)!r}; resume from it with a lower --lr")
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if energy is not None:
            self.model.update_state_energy_ema(all_reduce_mean(energy, self.info))
        self.step += 1
        return {"step": self.step, "loss": loss, "aux_loss": aux, "lr": lr,
                "grad_norm": grad_norm}

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean val cross-entropy (the metabolic term excluded) over ``eval_batches`` batches per
        rank, averaged over ranks."""
        self.model.eval()
        total = torch.zeros((), device=self.device)
        count = 0
        for batch in self.val_loader.iter_eval(self.config.eval_batches):
            with autocast(self.precision, self.device):
                out = self.forward(**self._batch(batch))
            total += (out.loss - out.aux_loss).float()
            count += 1
        self.model.train()
        return all_reduce_mean(total / max(count, 1), self.info).item()


def _due(step: int, every: int, last: bool) -> bool:
    """Whether a periodic action runs after ``step``: at the last step and every ``every``."""
    return last or (every > 0 and step % every == 0)


def train(config: TrainConfig, *, resume: bool = False, make_loader: Optional[Callable] = None,
          progress: bool = True, vocab_size: Optional[int] = None) -> RunResult:
    """Runs ``config`` (resuming from ``out_dir/checkpoint.pt`` when ``resume``) and returns
    its losses. ``make_loader(data_dir, split, batch_size, seq_len, *, seed, packed, rank,
    world_size)`` builds the loaders (default: ``cdssm.training.loader.TokenLoader``);
    ``vocab_size`` is the model's vocabulary when they do not read ``data_dir`` (synthetic
    tasks; default: ``data_dir/meta.json``'s).
    Raises ``TrainingDiverged`` on a non-finite loss."""
    device = resolve_device(config.device)
    info = init_parallel(device.type)
    try:
        if device.type == "cuda" and info.distributed:
            device = torch.device("cuda", info.local_rank)
            torch.cuda.set_device(device)
        return _run(Trainer(config, info, device, make_loader, vocab_size), resume, progress)
    finally:
        close_parallel(info)


def _run(trainer: Trainer, resume: bool, progress: bool) -> RunResult:
    from tqdm import tqdm

    config, info = trainer.config, trainer.info
    if resume:
        trainer.restore()
    if info.is_main:
        os.makedirs(config.out_dir, exist_ok=True)
        with open(os.path.join(config.out_dir, "config.json"), "w") as f:
            json.dump(config.to_dict(), f, indent=2)
        log = MetricsLog(config.out_dir, resume_step=trainer.step if resume else None)
    result = RunResult(model=trainer.model)
    tokens_per_step = config.tokens_per_step(info.world_size)
    bar = tqdm(total=trainer.total_steps, initial=trainer.step, unit="step", dynamic_ncols=True,
               disable=not (progress and info.is_main))
    start, timed_tokens, timed_s = time.perf_counter(), 0, 0.0
    while trainer.step < trainer.total_steps:
        tic = time.perf_counter()
        metrics = trainer.train_step()
        elapsed = time.perf_counter() - tic
        if trainer.step > 1 or resume:  # the first step compiles
            timed_tokens, timed_s = timed_tokens + tokens_per_step, timed_s + elapsed
        metrics.update(tokens=trainer.step * tokens_per_step,
                       tokens_per_s=tokens_per_step / elapsed,
                       model_tflops=trainer.flops_per_token * tokens_per_step / elapsed / 1e12,
                       elapsed_s=time.perf_counter() - start)
        if trainer.device.type == "cuda":
            metrics["peak_mem_gib"] = torch.cuda.max_memory_allocated(trainer.device) / 2**30
        result.losses.append(metrics["loss"])
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss']:.4f}", tok_s=f"{metrics['tokens_per_s']:.0f}",
                        lr=f"{metrics['lr']:.2e}")
        last = trainer.step == trainer.total_steps
        if info.is_main and _due(trainer.step, config.log_every, last):
            log.write(metrics)
        if _due(trainer.step, config.eval_every, last):
            val = trainer.evaluate()
            result.val_losses.append((trainer.step, val))
            record = {"step": trainer.step, "val_loss": val, "val_ppl": math.exp(min(val, 50))}
            if info.is_main:
                log.write(record)
                if progress:
                    bar.write(f"step {record['step']}: val loss {val:.4f}, "
                              f"ppl {record['val_ppl']:.2f}")
        if _due(trainer.step, config.checkpoint_every, last):
            trainer.save()
    bar.close()
    trainer.save_final_model()
    if timed_s > 0:
        result.tokens_per_s = timed_tokens / timed_s
        result.model_tflops = trainer.flops_per_token * result.tokens_per_s / 1e12
    return result
