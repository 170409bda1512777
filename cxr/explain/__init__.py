"""Explanations: where a model looks, how it errs, and the pictures that show it.

- `maps`: Grad-CAM (Captum) and the other attribution methods, computed apart from `overlay`, which draws them.
- `focus`: how much of a map falls inside the lungs, and the shortcut lesson's sentence.
- `interpret`: predictions and losses on a model's own test split, computed once; top losses and confusions.
- `figures`: curves, confusion matrix, top losses and the attention strip as matplotlib figures.
- `report`: a Hugging Face model card folder with those figures.
"""
