"""The training loop: Adam, gradient-norm clipping, validation, checkpoints and (AOD-Net) the dead-K guard.

What differs between models (module, initialisation, loss, prediction) is in :mod:`.tasks`.

Every epoch draws its samples from ``numpy.random.default_rng([seed, epoch])``, so a run is
reproducible from its config alone and ``resume`` continues exactly where it stopped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import yaml

from ..errors import ConfigError
from ..io.atomic import write_atomic
from ..metrics import SSIM_SETTINGS, mean_quality
from . import checkpoint, history
from .augment import AugmentConfig
from .config import config_hash
from .data import build_sources, fixed_set, make_batch
from .guard import DeadKGuard, measure
from .synth import SynthConfig
from .tasks import Task, get_task, nchw
from .tasks import aodnet_init as init_weights  # noqa: F401  (AOD-Net's initialisation, for callers)

log = logging.getLogger(__name__)


class Progress(Protocol):
    """Where the loop reports progress (the CLI wires this to tqdm; the library never prints)."""

    def start_epoch(self, epoch: int, steps: int) -> None: ...
    def step(self, loss: float) -> None: ...
    def end_epoch(self, row: dict[str, Any]) -> None: ...


class _NoGuard:
    """Models without AOD-Net's dead-K failure: nothing to watch."""

    recoveries = 0
    lr_factor = 1.0

    def check(self, x: torch.Tensor, where: str) -> None:
        pass


class _Silent:
    def start_epoch(self, epoch: int, steps: int) -> None:
        pass

    def step(self, loss: float) -> None:
        pass

    def end_epoch(self, row: dict[str, Any]) -> None:
        pass


@dataclass
class TrainResult:
    """What a finished run produced."""

    out_dir: Path
    best_epoch: int
    best_psnr: float
    best_ssim: float
    hazy_psnr: float
    hazy_ssim: float
    config_hash: str
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best_weights(self) -> Path:
        return self.out_dir / checkpoint.BEST

    @property
    def last_weights(self) -> Path:
        return self.out_dir / checkpoint.LAST


@torch.no_grad()
def predict(task: Task, model: torch.nn.Module, batch: tuple[np.ndarray, ...], batch_size: int) -> np.ndarray:
    """Run the model over a validation set ((N, H, W, 3) hazy first) in batches; returns (N, H, W, 3)."""
    model.eval()
    out = [task.predict(model, tuple(a[i:i + batch_size] for a in batch)) for i in range(0, len(batch[0]), batch_size)]
    return np.concatenate(out)


def _check_resumable(saved: dict[str, Any], cfg: dict[str, Any]) -> None:
    ignore = ("num_epochs", "output_dir", "threads", "log_every")
    a = {k: v for k, v in saved.items() if k not in ignore}
    b = {k: v for k, v in cfg.items() if k not in ignore}
    if a != b:
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise ConfigError(f"cannot resume: the config differs from the saved run in {', '.join(diff)}")


def train(cfg: dict[str, Any], *, out_dir: str | Path | None = None, resume: bool = False,
          progress: Progress | None = None) -> TrainResult:
    """Train the model ``cfg["model"]`` as ``cfg`` says (see :data:`tiledehaze.train.config.DEFAULTS`).

    Writes ``best.safetensors``, ``last.safetensors``, ``last_state.pt``, ``config.yaml``,
    ``metrics.csv``, ``metrics.jsonl`` and ``curves.png`` to ``out_dir`` (default
    ``cfg["output_dir"]``). With ``resume`` it continues from the folder's last epoch.
    """
    progress = progress or _Silent()
    out = Path(out_dir or cfg["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    task = get_task(cfg)
    if cfg["optim"].get("schedule", "constant") not in ("constant", "cosine"):
        raise ConfigError("optim.schedule must be 'constant' or 'cosine'")
    seed = int(cfg["seed"])
    chash = config_hash(cfg)
    torch.set_num_threads(int(cfg["threads"]))
    torch.manual_seed(seed)

    synth = SynthConfig.from_dict(cfg["synthesis"])
    aug = AugmentConfig.from_dict(cfg["augment"])
    patch = int(cfg["patch_size"])
    train_src, val_src = build_sources(cfg["data"], synth, aug, patch=patch, seed=seed, extras=task.extras,
                                       degrade=task.degrade(cfg) if task.degrade else None)
    val_set = fixed_set(val_src, int(cfg["data"]["val_samples"]), int(cfg["data"]["val_seed"]))
    val_hazy, val_clear = val_set[:2]
    hazy_psnr, hazy_ssim = mean_quality(val_clear, val_hazy)
    val_x = nchw(val_hazy)

    opt_cfg = cfg["optim"]
    model = task.module(cfg).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(opt_cfg["lr"]),
                                 weight_decay=float(opt_cfg["weight_decay"]))
    g = cfg["guard"]
    guard = DeadKGuard(model, optimizer, min_alive=float(g["min_alive_fraction"]),
                       white_level=float(g["white_level"]), lr_factor=float(g["lr_factor"]),
                       init_std=float(cfg["init_std"]), max_recoveries=int(g["max_recoveries"]),
                       generator=torch.Generator().manual_seed(seed)) if task.guard else _NoGuard()

    start, best_psnr, best_ssim, best_epoch, rows = 1, -np.inf, 0.0, 0, []
    if resume:
        weights, state = checkpoint.load_state(out, task.load)
        _check_resumable(yaml.safe_load(state["config"]), cfg)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["epoch"]) + 1
        best_psnr, best_ssim, best_epoch = float(state["best_psnr"]), float(state["best_ssim"]), int(state["best_epoch"])
        guard.recoveries = int(state["recoveries"])
        # the rows the state kept (older run folders: the metrics file up to the state's epoch)
        rows = state.get("history") or history.read(out, up_to_epoch=int(state["epoch"]))
        history.rewrite(out, rows)
        log.info("resuming %s after epoch %d (best %.2f dB at epoch %d)", out, start - 1, best_psnr, best_epoch)
    else:
        for name in ("metrics.csv", "metrics.jsonl"):
            (out / name).unlink(missing_ok=True)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in task.init(seed, cfg).items()})
    write_atomic(out / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    guard.check(val_x, "before training" if start == 1 else f"after resuming at epoch {start}")

    clip = float(opt_cfg["grad_clip_norm"])
    bs = int(cfg["train_batch_size"])
    steps = max(1, int(cfg["samples_per_epoch"]) // bs)
    check_every, log_every = int(g["check_every"]), int(cfg["log_every"])
    base_lr, cosine = float(opt_cfg["lr"]), opt_cfg.get("schedule", "constant") == "cosine"
    total_steps = steps * int(cfg["num_epochs"])
    log.info("training %d epochs x %d steps of %d patches of %d px; hazy validation input %.2f dB / SSIM %.4f",
             int(cfg["num_epochs"]), steps, bs, patch, hazy_psnr, hazy_ssim)

    for epoch in range(start, int(cfg["num_epochs"]) + 1):
        t0 = time.perf_counter()
        rng = np.random.default_rng([seed, epoch])
        model.train()
        progress.start_epoch(epoch, steps)
        losses = []
        for step in range(1, steps + 1):
            if cosine:  # decays to 0 over the run; the guard's reductions still apply
                done = (epoch - 1) * steps + step - 1
                # a plain float, so that the saved optimizer state loads with weights_only
                lr = float(base_lr * guard.lr_factor ** guard.recoveries * 0.5
                           * (1.0 + np.cos(np.pi * done / total_steps)))
                for group in optimizer.param_groups:
                    group["lr"] = lr
            loss, x = task.loss(model, make_batch(train_src, bs, rng, epoch), cfg, rng)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            value = float(loss.detach())
            losses.append(value)
            progress.step(value)
            if check_every and step % check_every == 0:
                guard.check(x, f"at epoch {epoch} step {step}")
            if log_every and step % log_every == 0:
                log.debug("epoch %d step %d/%d loss %.5f", epoch, step, steps, float(np.mean(losses[-log_every:])))

        # validation (the guard looks at the fixed validation batch too)
        guard.check(val_x, f"after epoch {epoch}")
        pred = predict(task, model, val_set, int(cfg["val_batch_size"]))
        val_loss = float(np.mean((pred - val_clear) ** 2))
        val_psnr, val_ssim = mean_quality(val_clear, pred)
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss,
               "val_psnr": val_psnr, "val_ssim": val_ssim, "hazy_psnr": hazy_psnr, "hazy_ssim": hazy_ssim,
               "k_alive": measure(model, val_x).k_alive if task.guard else 1.0, "lr": optimizer.param_groups[0]["lr"],
               "recoveries": guard.recoveries, "seconds": round(time.perf_counter() - t0, 2)}
        meta = {"config_hash": chash, "seed": str(seed), "epoch": str(epoch),
                "val_psnr": f"{val_psnr:.4f}", "val_ssim": f"{val_ssim:.4f}",
                "hazy_psnr": f"{hazy_psnr:.4f}", "hazy_ssim": f"{hazy_ssim:.4f}",
                "ssim_settings": SSIM_SETTINGS, "format": task.format}
        weights = model.to_numpy()
        if val_psnr > best_psnr:
            best_psnr, best_ssim, best_epoch = val_psnr, val_ssim, epoch
            checkpoint.save_checkpoint(out, checkpoint.BEST, weights, meta)
        checkpoint.save_checkpoint(out, checkpoint.LAST, weights, meta)
        rows.append(row)
        # the weights and metrics too, so that a kill between any two of these writes resumes exactly
        checkpoint.save_state(out, {
            "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "best_psnr": best_psnr,
            "best_ssim": best_ssim, "best_epoch": best_epoch, "recoveries": guard.recoveries, "history": rows,
            "config_hash": chash, "config": yaml.safe_dump(cfg, sort_keys=False)})
        history.append(out, row)
        history.plot(out, rows)
        progress.end_epoch(row)
        log.info("epoch %d: train loss %.5f, validation %.2f dB / SSIM %.4f (hazy %.2f dB), K alive %.0f%%, %.0f s",
                 epoch, row["train_loss"], val_psnr, val_ssim, hazy_psnr, 100 * row["k_alive"], row["seconds"])

    return TrainResult(out, best_epoch, float(best_psnr), float(best_ssim), hazy_psnr, hazy_ssim, chash, rows)
