"""cxr: fine-tune ResNet18 to tell COVID-19, viral pneumonia and normal chest X-rays apart, and explain it.

A small library, one file per concern: `images` (reading any X-ray file), `transforms` (resize, augment,
normalise), `lungs` (hiding the lungs, lung focus), `data` (dataset layouts, split, cache), `model` (ResNet18 and
its weights), `checkpoint`, `config` (`TrainConfig` and its bounds), `events` (what `fit` yields), `train` (`fit`, a
generator of events), `evaluate`, `interpret` (top losses, confusion, ROC AUC), `explain` (Grad-CAM and the other
attribution methods), `figures`, `report` (a model card), `predict`, `synthetic`, `download`, `presets`, `errors`,
`measure`, the benchmarks `bench`, `baseline` (the plain course recipe) and `speedrun` (time to accuracy), and the
command line in `cli`. It never imports gradio; the app in `demo/` is built on top of it.
"""

__version__ = "0.1.0"
