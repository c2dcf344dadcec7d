"""The mean of a run's weights over its last steps: stochastic weight averaging (Izmailov et al.,
"Averaging Weights Leads to Wider Optima and Better Generalization", UAI 2018, eq. 2 and Algorithm 1:
``w_swa <- (w_swa * n + w) / (n + 1)`` at every ``c``-th step of the averaging phase).

A recipe's ``"weight_average": {"start": S, "every": E}`` adds the weights after steps S, S + E, S + 2E, ...
up to the last step to a running mean; the run's bundle carries the mean. Choices the paper leaves open
and what this module does: the learning rate is the recipe's own schedule (the paper keeps it constant or
cyclic in the averaging phase; under a cosine schedule the mean covers the tail of the descent); the
networks here normalise per image (instance normalisation, no running statistics), so the paper's final
pass that recomputes BatchNorm statistics is not needed, and a buffer that is not floating point (a
counter) is taken from the last update. A network that keeps running statistics (BatchNorm) is refused:
the mean of its statistics is not the statistics of the mean weights, and the paper's recomputation pass is
not implemented. Averaging changes no training step: a run's trajectory is the
same with it and without it, and the mean is saved in the checkpoint, so a resumed run averages exactly
as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import ConfigError


class WeightAverage:
    """The running mean of a network's state over the steps :meth:`due` names."""

    def __init__(self, start: int, every: int) -> None:
        self.start = start
        self.every = every
        self.count = 0
        self.mean: dict[str, torch.Tensor] = {}

    @classmethod
    def from_config(cls, spec: Mapping, steps: int) -> WeightAverage | None:
        """The recipe's ``weight_average`` block (``{}``: none); one sentence for a malformed one."""
        if not spec:
            return None
        example = f'e.g. {{"start": {steps // 2}, "every": 250}}'
        if not isinstance(spec, Mapping) or set(spec) != {"start", "every"}:
            raise ConfigError(f"weight_average {spec!r}: give {{\"start\": STEP, \"every\": N}}, {example}.")
        start, every = spec["start"], spec["every"]
        for key, value in (("start", start), ("every", every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"weight_average {key} {value!r}: give a positive whole number of steps, {example}.")
        if start > steps:
            raise ConfigError(f"weight_average start {start} is after the run's last step ({steps}): no weights would be "
                              f"averaged; {example}.")
        return cls(start, every)

    @staticmethod
    def check_network(net: torch.nn.Module) -> None:
        """Refuse a network with running statistics (see the module's docstring)."""
        kept = sorted({type(m).__name__ for m in net.modules() if getattr(m, "track_running_stats", False)})
        if kept:
            raise ConfigError(f"weight_average needs a network without running statistics, and this one has {', '.join(kept)}: "
                              "give the network a per-image normalisation (e.g. \"norm\": \"modality_instance\" for "
                              "unet3d) or drop weight_average.")

    def due(self, step: int) -> bool:
        """Whether the weights after ``step`` (steps done) join the mean."""
        return step >= self.start and (step - self.start) % self.every == 0

    def update(self, state: Mapping[str, torch.Tensor]) -> None:
        """Add ``state`` (a network's ``state_dict``) to the mean, in float32 on the CPU."""
        self.count += 1
        for key, value in state.items():
            value = value.detach().to("cpu")
            if not value.is_floating_point():
                self.mean[key] = value.clone()
            elif key not in self.mean:
                self.mean[key] = value.float().clone()
            else:
                self.mean[key] += (value.float() - self.mean[key]) / self.count

    def averaged(self, like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The mean as a state dict with the dtypes and device of ``like`` (the live network's state)."""
        if not self.count:
            raise RuntimeError("no weights averaged yet")
        return {k: self.mean[k].to(dtype=v.dtype, device=v.device) for k, v in like.items()}

    def state_dict(self) -> dict:
        return {"start": self.start, "every": self.every, "count": self.count, "mean": self.mean}

    def load_state_dict(self, state: Mapping) -> None:
        if (state["start"], state["every"]) != (self.start, self.every):
            raise ConfigError(f"the checkpoint averaged weights from step {state['start']} every {state['every']}, the "
                              f"recipe says from {self.start} every {self.every}; keep the recipe the run began with.")
        self.count = int(state["count"])
        self.mean = dict(state["mean"])

    def record(self) -> dict:
        """What the bundle's metadata says of its weights."""
        last = self.start + (self.count - 1) * self.every
        return {"start": self.start, "every": self.every, "count": self.count, "steps": [self.start, last]}
