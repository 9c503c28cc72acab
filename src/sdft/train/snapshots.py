"""The adapter kept at a few steps of training, for the learning-against-forgetting curve.

Forgetting is judged at matched learning (sdft.evaluate.curve), so each run needs points along the way,
not only its end. Saving the adapter alone (a few MB for a small model, no optimizer state) at steps
spaced by powers of two puts the points where a run changes fastest. Snapshots are written whole or not at
all (a temporary folder renamed into place), survive a resumed run, and never change what is trained.
"""

from __future__ import annotations

from pathlib import Path

from sdft.core.layout import snapshot_dir
from sdft.train.session import save_adapter


def curve_steps(last: int, asked: list[int] | None) -> list[int]:
    """The steps before `last` that get a snapshot: `asked`, or 1, 2, 4, 8 ... below `last`. The final
    adapter is the curve's last point and step 0 is the seed itself, so neither is saved here."""
    if asked is not None:
        return sorted({s for s in asked if 0 < s < last})
    steps, s = [], 1
    while s < last:
        steps.append(s)
        s *= 2
    return steps


def snapshot_callback(out_dir: str | Path, asked: list[int] | None):
    """A TrainerCallback (transformers' Trainer, TRL's trainers) that saves the adapter at the curve's steps."""
    from transformers import TrainerCallback

    class SaveSnapshots(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.is_world_process_zero and model is not None and state.global_step in curve_steps(state.max_steps, asked):
                target = snapshot_dir(out_dir, state.global_step)
                if not (target / "adapter_config.json").is_file():  # a resumed run keeps the ones it has
                    save_adapter(model, target)
            return control

    return SaveSnapshots()
