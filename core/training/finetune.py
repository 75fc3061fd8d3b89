"""Fine-tuning a pretrained backbone: frozen throughout (freeze_backbone) or for the first
finetune_head_epochs epochs, then trained with the rest at its own lr (core.training.optimizers).

A callback, so the loop stays the same for every model (Lightning's BackboneFinetuning). The
Trainer adds it for a model that starts from ImageNet weights; the LR finder applies it to its
first steps as the run's first epoch would.
"""
from __future__ import annotations

from core.config import RunConfig
from core.models.registry import set_backbone_frozen
from core.training.hooks import Callback


class BackboneFinetuning(Callback):
    def __init__(self, config: RunConfig):
        self.model_name = config.model
        self.freeze_throughout, self.head_epochs = config.freeze_backbone, config.finetune_head_epochs

    def frozen_at(self, epoch: int) -> bool:
        """Whether the backbone is frozen during epoch `epoch` (counted from 0)."""
        return self.freeze_throughout or epoch < self.head_epochs

    def on_train_epoch_start(self, trainer) -> None:
        # Every epoch: model.train() turned a frozen backbone's BatchNorm statistics back on.
        set_backbone_frozen(trainer.model, self.model_name, self.frozen_at(trainer.state.epoch))
