"""optimlab: a drop-in ``torch.optim`` with faster engines, modern optimizers and a lab.

``import optimlab as optim`` reads like ``import torch.optim as optim``.
"""

from optimlab.algorithms import SGD, Adam, AdamW
from optimlab.optimizer import Optimizer, register_optimizer_step_post_hook, register_optimizer_step_pre_hook

__version__ = "0.1.0"

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "Optimizer",
    "register_optimizer_step_post_hook",
    "register_optimizer_step_pre_hook",
]
