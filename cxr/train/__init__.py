"""Training: the settings, the loop, and what a run leaves behind.

- `config`: `TrainConfig`, its bounds and words; `presets`: named settings (Fast (CPU), Recipe, GPU).
- `model`: ResNet18 with a new head, starting weights; `checkpoint`: self-describing checkpoint files;
  `writer`: checkpoints written aside by a thread.
- `events`: the typed events `fit` yields; `run`: a run's fixed set-up (data, model, optimiser, device);
  `state`: what changes as it trains (step, best so far, curves) and the keep policies; `budget`: steps and
  seconds (progress, ETA, the stop, when to evaluate); `loop`: `fit`, one step, one evaluation (validate, record,
  save) and the final test; `evaluate`: accuracy and the report; `calibration`: temperature scaling fitted on
  validation at the end of a run, and the expected calibration error (ECE) with its reliability bins; `fitted`:
what a finished run fits on its kept weights (the temperature and the out-of-distribution check).
"""
