"""Measuring scripts about the app and the presets (not tests): each is `python -m benchmarks.NAME` and prints its
figures; results they keep lie in `benchmarks/results/`. loadgen (a class classifying while a run trains), memprobe
(memory of large files), startup, sample_walk (a class on the real sample, with screenshots), explain_times,
map_grid (which class-activation map the app shows), preset_sweep (Fast-preset variants over many seeds), gpu_speed
and gpu_ab (on a CUDA machine)."""
