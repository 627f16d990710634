"""The parameter sets the step benchmarks run on: real models' tensor shapes, without the models.

An optimizer step never looks at the network, only at the list of parameter tensors, so a benchmark needs their
shapes and nothing else. The shapes are derived here from the published architectures (no torchvision, no
transformers, nothing downloaded) and checked against the known totals:

* ``gpt2``: GPT-2 small (Radford et al., "Language Models are Unsupervised Multitask Learners", 2019), as the
  Hugging Face ``GPT2Model`` lays it out: 148 tensors, 124,439,808 parameters (the LM head is tied to ``wte``).
* ``resnet50``: ResNet-50 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016), bottleneck
  blocks with the stride on the 3x3 convolution (torchvision's "v1.5" layout, which has the same shapes): 161
  tensors, 25,557,032 parameters (BatchNorm running statistics are buffers, not parameters).
* ``many_small``: 1000 tensors of 1024 elements, where per-tensor overhead dominates.
* ``tiny``: a handful of small tensors of mixed shapes, for the smoke test only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["PARAM_SETS", "ParamSet", "get_param_set", "gpt2_small_shapes", "resnet50_shapes"]

Shape = tuple[int, ...]


@dataclass(frozen=True)
class ParamSet:
    """A named list of parameter shapes.

    Args:
        name: short name used on the command line and in result files.
        description: one line saying what the shapes are.
        shapes: ``(parameter name, shape)`` in the model's ``named_parameters()`` order.
    """

    name: str
    description: str
    shapes: tuple[tuple[str, Shape], ...]

    @property
    def num_tensors(self) -> int:
        return len(self.shapes)

    @property
    def numel(self) -> int:
        return sum(math.prod(shape) for _, shape in self.shapes)

    def build(
        self, *, seed: int = 0, dtype: torch.dtype = torch.float32, grad_scale: float = 1e-3
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Fresh parameter values and gradients, one contiguous tensor each, on the CPU.

        Values are uniform in [-0.05, 0.05) and gradients uniform in [-grad_scale, grad_scale): finite, never
        denormal, and of both signs, so sign-dependent updates (Rprop) take both branches. Uniform rather than
        normal because filling 124M elements must take well under a second.

        Args:
            seed: seed of the private generator, so two builds with the same seed are equal.
            dtype: floating point dtype of both lists.
            grad_scale: half-width of the gradients' range.
        """
        gen = torch.Generator().manual_seed(seed)
        params = [torch.empty(shape, dtype=dtype).uniform_(-0.05, 0.05, generator=gen) for _, shape in self.shapes]
        grads = [
            torch.empty(shape, dtype=dtype).uniform_(-grad_scale, grad_scale, generator=gen) for _, shape in self.shapes
        ]
        return params, grads


def gpt2_small_shapes(
    vocab: int = 50257, n_positions: int = 1024, d_model: int = 768, n_layer: int = 12
) -> list[tuple[str, Shape]]:
    """GPT-2's parameter shapes (``transformers.GPT2Model`` names; ``Conv1D`` weights are ``(in, out)``).

    Args:
        vocab: vocabulary size (token embedding rows).
        n_positions: context length (position embedding rows).
        d_model: hidden width; the MLP is ``4 * d_model`` wide and attention projects to ``3 * d_model``.
        n_layer: number of transformer blocks.
    """
    shapes: list[tuple[str, Shape]] = [("wte.weight", (vocab, d_model)), ("wpe.weight", (n_positions, d_model))]
    for i in range(n_layer):
        h = f"h.{i}"
        shapes += [
            (f"{h}.ln_1.weight", (d_model,)),
            (f"{h}.ln_1.bias", (d_model,)),
            (f"{h}.attn.c_attn.weight", (d_model, 3 * d_model)),
            (f"{h}.attn.c_attn.bias", (3 * d_model,)),
            (f"{h}.attn.c_proj.weight", (d_model, d_model)),
            (f"{h}.attn.c_proj.bias", (d_model,)),
            (f"{h}.ln_2.weight", (d_model,)),
            (f"{h}.ln_2.bias", (d_model,)),
            (f"{h}.mlp.c_fc.weight", (d_model, 4 * d_model)),
            (f"{h}.mlp.c_fc.bias", (4 * d_model,)),
            (f"{h}.mlp.c_proj.weight", (4 * d_model, d_model)),
            (f"{h}.mlp.c_proj.bias", (d_model,)),
        ]
    shapes += [("ln_f.weight", (d_model,)), ("ln_f.bias", (d_model,))]
    return shapes


def resnet50_shapes(num_classes: int = 1000, blocks: tuple[int, ...] = (3, 4, 6, 3)) -> list[tuple[str, Shape]]:
    """ResNet-50's parameter shapes (torchvision's names): stem, four stages of bottlenecks, classifier.

    A bottleneck of width ``w`` is 1x1 conv (in -> w), 3x3 conv (w -> w), 1x1 conv (w -> 4w), each followed by a
    BatchNorm (weight and bias of its channel count); the first block of each stage projects its shortcut with a
    1x1 conv + BatchNorm to ``4w`` channels. Convolutions have no bias.

    Args:
        num_classes: outputs of the final fully connected layer.
        blocks: bottleneck blocks per stage (ResNet-50: 3, 4, 6, 3; ResNet-101: 3, 4, 23, 3).
    """
    expansion = 4

    def bn(name: str, channels: int) -> list[tuple[str, Shape]]:
        return [(f"{name}.weight", (channels,)), (f"{name}.bias", (channels,))]

    shapes: list[tuple[str, Shape]] = [("conv1.weight", (64, 3, 7, 7)), *bn("bn1", 64)]
    in_channels = 64
    for stage, (n_blocks, width) in enumerate(zip(blocks, (64, 128, 256, 512)), start=1):
        for b in range(n_blocks):
            pre = f"layer{stage}.{b}"
            shapes += [
                (f"{pre}.conv1.weight", (width, in_channels, 1, 1)),
                *bn(f"{pre}.bn1", width),
                (f"{pre}.conv2.weight", (width, width, 3, 3)),
                *bn(f"{pre}.bn2", width),
                (f"{pre}.conv3.weight", (width * expansion, width, 1, 1)),
                *bn(f"{pre}.bn3", width * expansion),
            ]
            if b == 0:
                shapes += [
                    (f"{pre}.downsample.0.weight", (width * expansion, in_channels, 1, 1)),
                    *bn(f"{pre}.downsample.1", width * expansion),
                ]
            in_channels = width * expansion
    shapes += [("fc.weight", (num_classes, in_channels)), ("fc.bias", (num_classes,))]
    return shapes


def _many_small(count: int = 1000, size: int = 1024) -> list[tuple[str, Shape]]:
    return [(f"p{i}", (size,)) for i in range(count)]


def _tiny() -> list[tuple[str, Shape]]:
    return [("w1", (16, 8)), ("b1", (16,)), ("w2", (8, 8)), ("scale", (1,)), ("conv", (4, 2, 3, 3)), ("b2", (33,))]


_BUILDERS: dict[str, tuple[str, Callable[[], list[tuple[str, Shape]]]]] = {
    "gpt2": ("GPT-2 small shapes (148 tensors, 124.4M params)", gpt2_small_shapes),
    "resnet50": ("ResNet-50 shapes (161 tensors, 25.6M params)", resnet50_shapes),
    "many_small": ("1000 tensors x 1024", _many_small),
    "tiny": ("6 small tensors (smoke tests only)", _tiny),
}

# The sets the benchmark runs by default; ``tiny`` exists for the smoke test.
PARAM_SETS: tuple[str, ...] = ("gpt2", "resnet50", "many_small")

# Known totals the derived shapes must reproduce (checked on every build, so a typo cannot go unnoticed).
_EXPECTED = {"gpt2": (148, 124_439_808), "resnet50": (161, 25_557_032), "many_small": (1000, 1_024_000)}


def get_param_set(name: str) -> ParamSet:
    """The parameter set called ``name`` (one of ``gpt2``, ``resnet50``, ``many_small``, ``tiny``).

    Raises:
        KeyError: for an unknown name, listing the known ones.
    """
    if name not in _BUILDERS:
        raise KeyError(f"unknown parameter set {name!r}; known: {', '.join(_BUILDERS)}")
    description, builder = _BUILDERS[name]
    pset = ParamSet(name, description, tuple(builder()))
    if name in _EXPECTED and (pset.num_tensors, pset.numel) != _EXPECTED[name]:
        raise AssertionError(
            f"{name}: derived {pset.num_tensors} tensors / {pset.numel} params, expected {_EXPECTED[name]}"
        )
    return pset
