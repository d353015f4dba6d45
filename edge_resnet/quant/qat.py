"""Quantization-aware training (QAT) of the one INT8 definition, starting from a PTQ calibration.

The forward pass is the simulation's arithmetic (``sim.QuantSim``, TensorRT placement): per-channel
symmetric int8 weights with scale amax_c/127, per-tensor symmetric int8 activations with scale
amax/127, round half to even, saturate, at exactly the points ``plan.activation_points`` names, and
the layers in ``float_layers`` read their inputs unquantized. Rounding passes gradients straight
through (the straight-through estimator); saturated values pass none. With ``learn_scales`` the
activation ranges are trained too (LSQ, Esser et al. 2020: the gradient of q(x)*s with respect to s,
scaled by 1/sqrt(n * 127)), in log space so a range can never turn negative. Weight ranges are not
learned: they stay the max of each output channel, as ``plan.quantize_weight`` computes them, so the
written files quantize the trained weights exactly as they were trained.

The loss is distillation: the squared error between the INT8 logits and the FP32 model's, divided by
the FP32 logits' power (the inverse of the logit SQNR the export reports). It needs no labels, and it
pulls INT8 toward the model the export's gate compares it with. The biases start from the PTQ plan's
bias-corrected ones, so epoch 0 is the PTQ model exactly; the trained biases already absorb the
rounding shift, so the result is written without bias correction.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from edge_resnet.calibration.calibrators import MIN_AMAX
from edge_resnet.contract.metrics import sqnr_from_sums
from edge_resnet.torch_settings import exact_fp32
from edge_resnet.models.graph import Graph, Node, trace
from edge_resnet.quant.plan import activation_points, make_plan, unit_name

log = logging.getLogger(__name__)

QMIN, QMAX = -128, 127
# Adam's rate for the log of the activation ranges: ranges are few and need to move by factors
# (a badly clipped one), weights only by a fraction of their rounding step
SCALE_LR = 0.03


def ste_round(x: Tensor) -> Tensor:
    """Round half to even forward; identity backward."""
    return x + (torch.round(x) - x).detach()


def _grad_scale(x: Tensor, g: float) -> Tensor:
    """``x`` forward; its gradient multiplied by ``g`` backward."""
    return (x - x * g).detach() + x * g


class _WeightFakeQuant(nn.Module):
    """Per-output-channel symmetric int8 of a weight (a parametrization): scale max|w_c|/127, not learned."""

    def forward(self, w: Tensor) -> Tensor:
        amax = w.detach().abs().flatten(1).amax(dim=1).clamp_min(MIN_AMAX)
        scale = (amax / 127).view((-1,) + (1,) * (w.dim() - 1))
        return torch.clamp(ste_round(w / scale), -127, 127) * scale


class QATModel(nn.Module):
    """A copy of a folded model that runs the TensorRT-placement INT8 arithmetic with trainable parts."""

    def __init__(self, folded: nn.Module, amax: Mapping[str, float], *, float_layers: frozenset[str] = frozenset(),
                 biases: Mapping[str, Tensor] | None = None, learn_scales: bool = True) -> None:
        super().__init__()
        self.model = copy.deepcopy(folded).eval()
        self.graph: Graph = trace(self.model)
        self.float_layers = frozenset(float_layers)
        self.points = activation_points(self.graph, "tensorrt", self.float_layers)  # tensor -> range source
        sources = sorted(set(self.points.values()))
        self._index = {name: i for i, name in enumerate(sources)}
        self.log_amax = nn.Parameter(torch.tensor([math.log(max(float(amax[s]), MIN_AMAX)) for s in sources],
                                                  dtype=torch.float32), requires_grad=learn_scales)
        with torch.no_grad():
            for node in self.graph.of_op("conv", "linear"):
                if unit_name(node) in self.float_layers:
                    continue
                module = node.module
                if biases is not None and node.name in biases:
                    if module.bias is None:
                        module.bias = nn.Parameter(torch.zeros(module.weight.shape[0], device=module.weight.device))
                    module.bias.copy_(biases[node.name].to(module.bias))
                parametrize.register_parametrization(module, "weight", _WeightFakeQuant())

    def amax(self) -> dict[str, float]:
        """The (learned) range of every quantized tensor, by tensor name."""
        values = self.log_amax.detach().exp().cpu().tolist()
        return {t: values[self._index[src]] for t, src in self.points.items()}

    def _visit(self, node: Node, out: Tensor) -> Tensor:
        src = self.points.get(node.name)
        if src is None:
            return out
        amax = self.log_amax[self._index[src]].exp()
        if self.training and self.log_amax.requires_grad:
            amax = _grad_scale(amax, 1.0 / math.sqrt(out.numel() * QMAX))
        scale = amax / 127
        return torch.clamp(ste_round(out / scale), QMIN, QMAX) * scale

    def forward(self, x: Tensor) -> Tensor:
        reads = (lambda n: unit_name(n) in self.float_layers) if self.float_layers else None
        return self.graph.run(x, self._visit, reads)

    def folded(self) -> nn.Module:
        """A plain folded model holding the trained float weights and biases (the parametrizations removed)."""
        out = copy.deepcopy(self.model)
        for module in out.modules():
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        return out.eval()


@dataclass
class QATResult:
    model: nn.Module  # the folded model with the trained weights and biases
    amax: dict[str, float]  # the ranges of the TensorRT placement's quantized tensors
    sqnr_before: float  # logit SQNR (dB) of the starting PTQ model on the held-out images
    sqnr_after: float  # of the kept epoch
    best_epoch: int  # 0: no epoch beat the start, and the start is returned
    history: list[dict[str, float]] = field(default_factory=list)


def held_out_sqnr(qat_model: QATModel, ref: Sequence[Tensor], batches: Sequence[Tensor],
                  device: torch.device | str) -> float:
    qat_model.eval()
    signal = noise = 0.0
    with torch.no_grad(), exact_fp32():
        for x, r in zip(batches, ref):
            out = qat_model(x.to(device)).double()
            signal += float((r.double() ** 2).sum())
            noise += float(((out - r.double()) ** 2).sum())
    return sqnr_from_sums(signal, noise)


def train_qat(folded: nn.Module, graph: Graph, amax: Mapping[str, float], train_batches: Callable[[int], Iterable[Tensor]],
              held_out: Sequence[Tensor], *, epochs: int, lr: float, float_layers: frozenset[str] = frozenset(),
              channel_mean: Mapping[str, Sequence[float]] | None = None, learn_scales: bool = True,
              scale_lr: float = SCALE_LR, device: torch.device | str = "cpu",
              on_epoch: Callable[[dict[str, float]], None] | None = None) -> QATResult:
    """Fine-tune ``folded`` under fake quantization toward its own FP32 logits.

    Args:
        amax: the PTQ calibration's ranges (every tensor of ``graph``); training starts from them.
        train_batches: ``train_batches(epoch)`` yields the preprocessed images of one epoch.
        held_out: preprocessed held-out images; the epoch whose INT8 logits are closest to FP32 on
            them is kept (or the start, if none is closer).
        lr: Adam's learning rate for the weights and biases.
        scale_lr: Adam's learning rate for the natural log of the activation ranges (0.03: a range
            moves at most about 3% a step). Both follow a cosine decay over the epochs.
    """
    teacher = folded.eval().to(device)
    plan = make_plan(graph, amax, "tensorrt", channel_mean, float_layers=float_layers)
    biases = {k: torch.from_numpy(v) for k, v in plan.biases.items()}
    model = QATModel(folded, amax, float_layers=float_layers, biases=biases, learn_scales=learn_scales).to(device)
    with torch.no_grad(), exact_fp32():
        ref = [teacher(x.to(device)) for x in held_out]
    before = held_out_sqnr(model, ref, held_out, device)
    best = (before, 0, copy.deepcopy(model.state_dict()))
    weights = [p for n, p in model.named_parameters() if n != "log_amax" and p.requires_grad]
    groups = [{"params": weights, "lr": lr}]
    if learn_scales:
        groups.append({"params": [model.log_amax], "lr": scale_lr})
    opt = torch.optim.Adam(groups)
    # cosine decay by epoch: the last epoch still learns (at a fraction of the rate), none at zero
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.5 * (1 + math.cos(math.pi * e / epochs)))
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        total, steps = 0.0, 0
        for x in train_batches(epoch):
            x = x.to(device)
            with exact_fp32():
                with torch.no_grad():
                    target = teacher(x)
                out = model(x)
                loss = ((out - target) ** 2).sum() / (target ** 2).sum().clamp_min(1e-12)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
        sched.step()
        db = held_out_sqnr(model, ref, held_out, device)
        record = {"epoch": epoch, "train_loss": total / max(steps, 1), "held_out_sqnr_db": db}
        history.append(record)
        log.info("qat epoch %d/%d: train loss %.3g, held-out logit SQNR %.2f dB", epoch, epochs, record["train_loss"], db)
        if on_epoch is not None:
            on_epoch(record)
        if db > best[0]:
            best = (db, epoch, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    # no epoch beat the start: return the calibrated ranges themselves, not their exp(log()) round trip,
    # whose last-bit differences would flip roundings and move the written model off the PTQ one
    ranges = model.amax() if best[1] else {t: float(amax[src]) for t, src in model.points.items()}
    return QATResult(model.folded(), ranges, before, best[0], best[1], history)


__all__ = ["QATModel", "QATResult", "held_out_sqnr", "ste_round", "train_qat"]
