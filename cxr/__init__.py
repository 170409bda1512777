"""cxr: fine-tune ResNet18 to tell COVID-19, viral pneumonia and normal chest X-rays apart, and explain it.

A small library, one file per concern: `images` (reading any X-ray file), `transforms` (resize, augment,
normalise), `data` (dataset layouts, split, cache), `model` (ResNet18 and its weights), `checkpoint`, `train`
(`fit`, a generator of events), `evaluate`, `explain` (Grad-CAM), `predict`, `synthetic`, `download`, `presets`,
`bench` and the command line in `cli`. It never imports gradio; the app in `demo/` is built on top of it.
"""

__version__ = "0.1.0"
