"""Explanations: where a model looks, how it errs, and the pictures that show it.

- `maps`: Grad-CAM (Captum, at the stage with at least 7 x 7 cells) and the other attribution methods.
- `draw`: `overlay` and `draw_outline`, which draw a map over an X-ray, apart from computing it.
- `hidden`: what a model trained with hidden lungs never saw, drawn on its maps with one sentence.
- `ood`: does an image look like the training X-rays? A distance on the model's features, fitted as a run ends.
- `focus`: how much of a map falls inside the lungs, and the shortcut lesson's sentence.
- `interpret`: predictions and losses on a model's own test split, computed once; top losses and confusions.
- `figures`: curves, confusion matrix, top losses and the attention strip as matplotlib figures.
- `reliability`: the reliability diagram (confidence against accuracy, before and after temperature scaling).
- `facts`: what a report is written from, gathered once per checkpoint (saved numbers, rebuilt test set, notes).
- `card`: the model card text, its Hub metadata dumped as YAML front matter.
- `report`: a Hugging Face model card folder: the card, metrics.json and those figures.
"""
