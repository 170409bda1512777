"""Run time of each explanation method for one X-ray at the sizes the app trains at, on this machine's CPU (median
of three after a warm-up; random weights, which cost the same as trained ones), and each as a multiple of one
forward pass timed as the Classify panel times it (`demo.explain_panel.forward_seconds`: the fastest of three).
Those multiples are what `METHODS[...].forwards` should hold; beside each, the estimate it gives now. The last
column is the whole comparison the panel runs (every method on the model and on its random-weights copy, the copy
made first, each map drawn), against the panel's estimate (twice the sum of the methods'). Close other work first.

    python -m benchmarks.explain_times ../shared/cxr-sample/COVID/images/COVID-1015.png [--sizes 64,80,96,112,224]
        [--threads 1]
"""

import argparse
import statistics
import time

import torch

from cxr.data.images import read_xray
from cxr.data.transforms import prepare_image, to_model_input
from cxr.explain.maps import METHODS, estimate_seconds, overlay, timed_explain
from cxr.explain.sanity import randomized_copy, sanity_words
from cxr.train.model import build_model

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("xray")
ap.add_argument("--sizes", default="64,80,96,112,224")
ap.add_argument("--threads", type=int, help="torch threads; 1 keeps the ratios steady on a machine others share")
args = ap.parse_args()
if args.threads:
    torch.set_num_threads(args.threads)
print("threads", torch.get_num_threads())
for size in (int(s) for s in args.sizes.split(",")):
    torch.manual_seed(0)
    model, _ = build_model(3, "none")
    model.eval()
    image = read_xray(args.xray, max_side=1024)
    x = to_model_input(prepare_image(image, size).unsqueeze(0))
    with torch.inference_mode():
        model(x)
        t = []
        for _ in range(3):
            t0 = time.perf_counter()
            model(x)
            t.append(time.perf_counter() - t0)
    forward = min(t)
    row = [f"{size} px: forward {forward * 1000:.1f} ms"]
    for name in METHODS:
        timed_explain(model, x, name)
        secs = statistics.median(timed_explain(model, x, name)[2] for _ in range(3))
        row.append(f"{METHODS[name].label} {secs:.3f} s = {secs / forward:.1f} forwards "
                   f"(estimate {estimate_seconds(name, forward, size):.3f} s)")
    print(" | ".join(row), flush=True)
    t0 = time.perf_counter()
    random_model = randomized_copy(model, seed=0)
    for name in METHODS:  # what demo.explain_panel.compare does, less the web page
        trained, randomised = timed_explain(model, x, name, 0)[0], timed_explain(random_model, x, name, 0)[0]
        overlay(image, trained[0]), overlay(image, randomised[0]), sanity_words(trained[0], randomised[0])
    panel = time.perf_counter() - t0
    estimate = 2 * sum(estimate_seconds(name, forward, size) for name in METHODS)
    print(f"  panel {panel:.2f} s (estimate {estimate:.2f} s)", flush=True)
