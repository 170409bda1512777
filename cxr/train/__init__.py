"""Training: the settings, the loop, and what a run leaves behind.

- `config`: `TrainConfig`, its bounds and words; `presets`: named settings (Fast (CPU), Recipe, GPU).
- `model`: ResNet18 with a new head, starting weights; `checkpoint`: self-describing checkpoint files;
  `writer`: checkpoints written aside by a thread.
- `events`: the typed events `fit` yields; `run`: a run's set-up (data, model, optimiser, device);
  `loop`: `fit`, `train_one_epoch`-style steps and the evaluation cadence; `evaluate`: accuracy and the report.
"""
