"""Run time of each explanation method for one X-ray at 128 and 224 px on this machine's CPU (median of three after
a warm-up; random weights, which cost the same as trained ones). Close other work first.

    python -m benchmarks.explain_times ../shared/cxr-sample/COVID/images/COVID-1015.png
"""

import statistics
import sys
import time

import torch

from cxr.explain.maps import METHODS, timed_explain
from cxr.data.images import read_xray
from cxr.train.model import build_model
from cxr.data.transforms import prepare_image, to_model_input

f = sys.argv[1]
print("threads", torch.get_num_threads())
for size in (128, 224):
    torch.manual_seed(0)
    model, _ = build_model(3, "none"); model.eval()
    x = to_model_input(prepare_image(read_xray(f, max_side=1024), size).unsqueeze(0))
    with torch.inference_mode():
        model(x)
        t = []
        for _ in range(5):
            t0 = time.perf_counter(); model(x); t.append(time.perf_counter() - t0)
    row = [f"{size} px: forward {statistics.median(t)*1000:.0f} ms"]
    for name in METHODS:
        timed_explain(model, x, name)
        secs = [timed_explain(model, x, name)[2] for _ in range(3)]
        row.append(f"{METHODS[name].label} {statistics.median(secs):.2f} s")
    print(" | ".join(row), flush=True)
